#!/usr/bin/env node
/*
 * grpc-host-service.mjs - the OFFICIAL native gRPC client (@tdxvolt/volt-client-grpc)
 * hosting the echo service of examples/proto/echo.proto, answering the invocations the Volt
 * routes to it over its Connect session (the client's RpcInvocation):
 *
 *     node interop/grpc-host-service.mjs <host client.config.json> <caller identity DID>
 *
 * It saves the service resource (RELAYED, hosted by this client, with its public key and the
 * proto text), lets the caller read and invoke it (SaveAccess, as its owner), connects with
 * accept_invocation and online_services, and prints {"step":"ready","service_id"} once the
 * session is up. Then it answers until its stdin ends:
 *   - Echo: one answer {text, sequence: 1}, then the end of the call; a request whose text
 *     is "fail" ends the call with the error "asked to fail" instead;
 *   - EchoStream: one answer per request {text, sequence: n}, and the end of the call when
 *     the caller ends its side.
 * When stdin ends it prints {"step":"served","calls":[{method, service_id, aud, sub}]} (in
 * the order the calls came) and the done line.
 *
 * Output: one JSON line per step (see lib/scenario.mjs); exit status 0 when every step passed.
 */

import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";

import { check, fail, finish, loadGrpcClient, startRun, step, withTimeout } from "./lib/scenario.mjs";

const SERVICE = "tdx_volt.examples.echo.v1.Echo";
const PROTO = readFileSync(new URL("../examples/proto/echo.proto", import.meta.url), "utf8");
const CONNECT_TIMEOUT_MS = 10_000;
// The caller has this long to make its calls and close our stdin.
const SERVE_TIMEOUT_MS = 120_000;

const config = startRun("grpc-host-service", { overallTimeoutMs: SERVE_TIMEOUT_MS + 30_000 });
const callerDid = process.argv[3];
if (!callerDid) {
  fail(`usage: node ${process.argv[1]} <host client config JSON path> <caller identity DID>`);
}
const { grpc, VoltClient } = await loadGrpcClient();
const { protoUtils } = await import("@tdxvolt/volt-client-grpc");

const client = new VoltClient(grpc);
await step("connect", async () => {
  await client.initialise(structuredClone(config), { noResolve: true });
  return { address: config.volt.address };
});

let service;
await step("save_service", async () => {
  // The host's key exchanges are signed with this client's own key: the description
  // carries its public half (a PEM "PUBLIC KEY", as the client reads host_public_key).
  const publicKey = createPublicKey(client.credential.cache.key).export({ type: "spki", format: "pem" });
  const description = {
    host_type: "SERVICE_HOST_TYPE_RELAYED",
    host_client_id: config.credential.client_id,
    host_public_key: publicKey,
    service_api: [SERVICE],
    proto_file: [{ file_path: "echo.proto", protobuf: PROTO, service_name: [SERVICE] }]
  };
  const made = await client.SaveResource({
    create: true,
    resource: { name: "official-echo", kind: ["volt:service"], service_description: description }
  });
  check(made?.resource?.id, `SaveResource: ${JSON.stringify(made)}`);
  // The service's calls carry its id as target_service_id (host_service_id): known once saved.
  const saved = await client.SaveResource({
    resource: { ...made.resource, service_description: { ...description, host_service_id: made.resource.id } }
  });
  check(saved?.resource?.id === made.resource.id, `SaveResource (update): ${JSON.stringify(saved)}`);
  service = saved.resource;
  for (const access of ["volt:resource-read", "volt:resource-invoke"]) {
    await client.SaveAccess({ access: { resource_id: service.id, identity_did: callerDid, access } });
  }
  return { service_id: service.id, host_client_id: description.host_client_id };
});

// The gRPC method definitions (serialisers) of the service, built from its proto text as
// the client builds them for its callers; keyed by the method's full path.
const methods = new Map(
  Object.values(protoUtils.getServiceDescriptors(service)).map((method) => [method.path, method])
);

const calls = [];
let closing = false;
function answer(invocation) {
  calls.push({
    method: invocation.methodName,
    service_id: invocation.serviceId,
    aud: invocation.token?.aud,
    sub: invocation.token?.sub
  });
  const method = methods.get(invocation.methodName);
  if (!method) {
    invocation.sendEnd(`${invocation.methodName}: no such method`);
    return;
  }
  // Set before reading .payload, which decodes with it.
  invocation.methodDescriptor = method;
  let sequence = 0;
  const echo = () => {
    const request = invocation.payload;
    if (request.text === "fail") {
      invocation.sendEnd("asked to fail");
      return false;
    }
    sequence += 1;
    invocation.sendResponse({ text: request.text, sequence });
    return true;
  };
  // The request of the method_invoke is the invocation's payload when it is handed over.
  const answered = echo();
  if (method.path.endsWith("/Echo")) {
    if (answered) invocation.sendEnd();
    return;
  }
  // Caveat (official client 0.20.34): the client emits an invocation's first "payload" event
  // before it hands the invocation to the application, and each later request as a "payload"
  // event as it comes; a request the Volt delivers before this listener is attached would be
  // missed (our caller sends each EchoStream request after the answer to the one before).
  invocation.on("payload", echo);
  invocation.on("end", () => invocation.sendEnd());
  invocation.on("error", () => invocation.sendEnd("the caller failed the call"));
}

await step("host", async () => {
  client.on("invoke_request", (invocation) => {
    try {
      answer(invocation);
    } catch (err) {
      fail(`answering ${invocation.methodName}: ${err.message}`);
    }
  });
  client.on("connectionError", (err) => fail(`the Connect session failed: ${err.message}`));
  const connected = new Promise((resolve) => {
    client.on("connected", (connectionId) => {
      if (connectionId) resolve(connectionId);
      else if (!closing) fail("the Connect session ended");
    });
  });
  // connect() resolves before the session is up: the "connected" event says when it is.
  await client.connect({ hello: { accept_invocation: true, online_services: true } });
  const connectionId = await withTimeout(connected, CONNECT_TIMEOUT_MS, "the Connect session");
  return { connection_id: connectionId };
});

await step("ready", async () => ({ service_id: service.id }));

await step(
  "served",
  async () => {
    process.stdin.resume();
    await new Promise((resolve) => process.stdin.on("end", resolve));
    return { calls };
  },
  { timeoutMs: SERVE_TIMEOUT_MS }
);

closing = true;
client.disconnect();
client.close();
finish();
