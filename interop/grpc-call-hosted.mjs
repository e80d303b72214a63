#!/usr/bin/env node
/*
 * grpc-call-hosted.mjs - the OFFICIAL native gRPC client (@tdxvolt/volt-client-grpc) calling
 * the echo service of examples/proto/echo.proto that another Volt client hosts (our
 * `host_echo` example), through the Volt:
 *
 *     node interop/grpc-call-hosted.mjs <caller client.config.json>
 *
 * The caller finds the service with DiscoverServices (with its proto text), checks the
 * description the official client builds its call from, then calls unary `Echo` and the
 * bidirectional `EchoStream` (three requests) with the client's own helpers, unaryCall and
 * bidiStreamingCall, given the service resource.
 *
 * Output: one JSON line per step (see lib/scenario.mjs); exit status 0 when every step passed.
 */

import {
  check,
  checkEqual,
  finish,
  loadGrpcClient,
  startRun,
  step,
  withTimeout
} from "./lib/scenario.mjs";

const SERVICE = "tdx_volt.examples.echo.v1.Echo";
const ANSWER_TIMEOUT_MS = 10_000;

const config = startRun("grpc-call-hosted");
const { grpc, VoltClient } = await loadGrpcClient();
const client = new VoltClient(grpc);

await step("connect", async () => {
  await client.initialise(structuredClone(config), { noResolve: true });
  return { address: config.volt.address };
});

let service;
await step("discover", async () => {
  const found = await client.DiscoverServices({ service_api: [SERVICE], include_protobuf: true });
  const all = found?.resource ?? [];
  check(all.length === 1, `DiscoverServices lists ${all.length} echo services: ${JSON.stringify(found)}`);
  const resource = all[0];
  const description = resource.service_description ?? {};
  // What the official client reads of a hosted service's description (grpc-call.js,
  // proto-utils.js): it tunnels when host_type is RELAYED, to host_client_id (token audience
  // and last target_did) and host_service_id (target_service_id); it checks the host's key
  // exchange with host_public_key (a PEM "PUBLIC KEY", SPKI); it builds the call's
  // descriptors by parsing every proto_file[].protobuf and taking the services service_api
  // names.
  checkEqual(description.host_type, "SERVICE_HOST_TYPE_RELAYED", "host_type");
  check(description.host_client_id, "no host_client_id");
  checkEqual(description.host_service_id, resource.id, "host_service_id (the resource's own id)");
  check(
    /^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?$/.test(description.host_public_key ?? ""),
    `host_public_key is not a PEM public key: ${JSON.stringify(description.host_public_key)}`
  );
  checkEqual(description.service_api, [SERVICE], "service_api");
  check(
    (description.proto_file ?? []).some((f) => (f.protobuf ?? "").includes("service Echo")),
    `no proto_file with the service's proto text: ${JSON.stringify(description.proto_file)}`
  );
  check(description.host_connection_id, "no host_connection_id (the service is not online)");
  // See below: the official client needs one.
  check(description.host_address, "no host_address in the service description");
  service = resource;
  return { service_id: resource.id, host_client_id: description.host_client_id };
});

// The official client (0.20.34) makes a grpc-js client at service_description.host_address
// for any service that is not built in, even a RELAYED one whose calls all go through the
// Volt's own VoltAPI/Invoke, and throws `Could not parse target name ""` without one. That
// client is never dialled; host_echo fills the field with the Volt's address.
const callable = service;

await step("unary_echo", async () => {
  // Resolves when the Invoke stream ends, after the host's end of the call.
  const answer = await withTimeout(
    client.unaryCall("Echo", { text: "hello from the official client" }, callable),
    ANSWER_TIMEOUT_MS,
    "the answer to Echo"
  );
  // uint64 arrives as a string (the client's loader options: longs as String).
  checkEqual(
    { text: answer?.text, sequence: String(answer?.sequence) },
    { text: "hello from the official client", sequence: "1" },
    "Echo's answer"
  );
  return { answer };
});

await step("bidi_echo_stream", async () => {
  const texts = ["one", "two", "three"];
  const answers = [];
  const call = client.bidiStreamingCall("EchoStream", { text: texts[0] }, callable);
  const ended = new Promise((resolve, reject) => {
    call.on("data", (answer) => {
      answers.push({ text: answer.text, sequence: String(answer.sequence) });
      // Workarounds (official client 0.20.34):
      // - A write before the call's key exchange finished sends a second key exchange and
      //   breaks the call, and the client tells nobody when the exchange is done: each
      //   request is written once the answer to the one before it arrived (the first
      //   request, given to bidiStreamingCall, is held by the client until the exchange).
      // - After end() the client drops every later answer: end() only once the last
      //   answer arrived.
      if (answers.length < texts.length) {
        call.write({ text: texts[answers.length] });
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

client.close();
finish();
