#!/usr/bin/env node
/*
 * web-call-hosted.mjs - the OFFICIAL websocket client (@tdxvolt/volt-client-web, pure-JS
 * build) calling the echo service of examples/proto/echo.proto that another Volt client hosts
 * (our `host_echo` example), through the Volt's websocket gateway:
 *
 *     node interop/web-call-hosted.mjs <caller client.config.json>
 *
 * The caller finds the service with DiscoverServices, then calls unary `Echo` (unaryCall)
 * and the bidirectional `EchoStream` (streamingCall, three requests), each given the service
 * resource. The web client routes such a call with its key-exchange frame's meta (`d`: the
 * host's client id, `s`: the service id), signs its token for the host, checks the key
 * exchange against the service's host_public_key, and speaks proto3 JSON, which the host
 * answers in JSON too.
 *
 * Output: one JSON line per step (see lib/scenario.mjs); exit status 0 when every step passed.
 */

import {
  check,
  checkEqual,
  fail,
  finish,
  startRun,
  step,
  withTimeout
} from "./lib/scenario.mjs";

const SERVICE = "tdx_volt.examples.echo.v1.Echo";
const ECHO = `/${SERVICE}/Echo`;
const ECHO_STREAM = `/${SERVICE}/EchoStream`;
const ANSWER_TIMEOUT_MS = 10_000;

const config = startRun("web-call-hosted");

let WebSocket;
let VoltClient;
try {
  ({ default: WebSocket } = await import("ws"));
  ({ VoltClient } = await import("@tdxvolt/volt-client-web/js"));
} catch (err) {
  fail(
    `cannot load the official client packages (${err.message}); run \`npm ci --prefix interop\` first`
  );
}

let client;
await step("connect", async () => {
  const caPem = config.volt.ca_pem;
  class VoltCaWebSocket extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { ca: caPem });
    }
  }
  client = new VoltClient(VoltCaWebSocket);
  await client.initialise(structuredClone(config));
  return { http_address: config.volt.http_address };
});

let service;
await step("discover", async () => {
  const found = await client.DiscoverServices({ service_api: [SERVICE] });
  const all = found?.resource ?? [];
  check(all.length === 1, `DiscoverServices lists ${all.length} echo services: ${JSON.stringify(found)}`);
  service = all[0];
  const description = service.service_description ?? {};
  // What the web client reads of it: host_type RELAYED (then `s` = host_service_id),
  // host_client_id (the token's audience and the last hop of `d`), host_public_key (PEM).
  checkEqual(description.host_type, "SERVICE_HOST_TYPE_RELAYED", "host_type");
  check(description.host_client_id, "no host_client_id");
  checkEqual(description.host_service_id, service.id, "host_service_id");
  check(description.host_public_key, "no host_public_key");
  return { service_id: service.id, host_client_id: description.host_client_id };
});

await step("unary_echo", async () => {
  const answer = await withTimeout(
    client.unaryCall(ECHO, { text: "hello from the official web client" }, service),
    ANSWER_TIMEOUT_MS,
    "the answer to Echo"
  );
  // proto3 JSON: uint64 as a string.
  checkEqual(
    { text: answer?.text, sequence: String(answer?.sequence) },
    { text: "hello from the official web client", sequence: "1" },
    "Echo's answer"
  );
  return { answer };
});

await step("bidi_echo_stream", async () => {
  const texts = ["one", "two", "three"];
  const answers = [];
  const call = client.streamingCall(ECHO_STREAM, { text: texts[0] }, service);
  const ended = new Promise((resolve, reject) => {
    call.on("data", (answer) => {
      answers.push({ text: answer.text, sequence: String(answer.sequence) });
      // The web client queues writes made before the key exchange and sends them after it,
      // so the rest could go at once; one at a time keeps the order check simple.
      if (answers.length < texts.length) {
        call.send({ text: texts[answers.length] });
      } else {
        call.end();
      }
    });
    call.on("error", reject);
    call.on("end", resolve);
  });
  await withTimeout(ended, ANSWER_TIMEOUT_MS, `the end of EchoStream (answers so far: ${JSON.stringify(answers)})`);
  checkEqual(
    answers,
    texts.map((text, i) => ({ text, sequence: String(i + 1) })),
    "EchoStream's answers"
  );
  return { answers: answers.length };
});

await step("host_error", async () => {
  // A method the host does not serve: its status reaches the caller as the call's error.
  const failed = await withTimeout(
    client.unaryCall(`/${SERVICE}/Missing`, { text: "x" }, service).then(
      () => null,
      (err) => err
    ),
    ANSWER_TIMEOUT_MS,
    "the refusal of an unknown method"
  );
  check(failed instanceof Error, `an unknown method was answered: ${JSON.stringify(failed)}`);
  return { error: failed.message };
});

client.close?.();
finish();
