#!/usr/bin/env node
/*
 * emulator-grpc.mjs - drives the OFFICIAL native gRPC client (@tdxvolt/volt-client-grpc,
 * with @grpc/grpc-js as its gRPC module, as its README prescribes) against a Volt, using the
 * client configuration the Volt issued.
 *
 *     node interop/emulator-grpc.mjs <client.config.json>
 *
 * The client is given the configuration as an object (so it does not write its credential
 * cache back into the file) with `noResolve: true` (so it does not look the Volt up in the
 * public DID registries). It connects to `volt.address` over TLS trusting `volt.ca_pem`
 * (or `credential.ca`), presenting `credential.cert` when the configuration has one; every
 * call carries the `volt-token` metadata. Without `credential.cert` it first calls
 * Authenticate, as the client always does. A last step reconnects with the configuration the
 * client saved after Authenticate (client certificate, mutual TLS), as its next run would.
 *
 * Steps and output: see lib/scenario.mjs. Exit status 0 when every step passed.
 */

import { Buffer } from "node:buffer";

import {
  authRequestQueue,
  finish,
  loadGrpcClient,
  runScenario,
  startRun,
  step,
  withTimeout
} from "./lib/scenario.mjs";

const config = startRun("grpc");

const { grpc, VoltClient } = await loadGrpcClient();

let client;

await step("connect", async () => {
  if (!config.volt.address) {
    throw new Error("the configuration has no volt.address");
  }
  const hadCert = !!config.credential?.cert;
  client = new VoltClient(grpc);
  await client.initialise(structuredClone(config), { noResolve: true });
  return {
    address: config.volt.address,
    client_certificate: hadCert,
    authenticated: !hadCert,
    session: !!client.credential.sessionId
  };
});

await runScenario(client, config, {
  name: "grpc",
  encodeChunk: (buf) => Buffer.from(buf),
  decodeChunk: (value) => Buffer.from(value),
  // The gRPC helper decodes each cell by its own oneof member, so NULL is always null.
  helperNullFor: () => null,
  connectOther: async (otherConfig) => {
    const other = new VoltClient(grpc);
    await other.initialise(structuredClone(otherConfig), { noResolve: true });
    return other;
  },
  // The client's own session: connect() sends the hello, events arrive as "evt".
  listenAuthRequests: async (owner) => {
    const queue = authRequestQueue();
    const onEvt = (evt) => queue.push(evt);
    owner.on("evt", onEvt);
    const connected = new Promise((resolve) => {
      owner.once("connected", resolve);
    });
    await owner.connect({ hello: { subscribe_auth_requests: true } });
    await withTimeout(connected, 10_000, "the Connect session");
    return {
      next: () => queue.next(),
      close: () => {
        owner.off("evt", onEvt);
        owner.disconnect();
      }
    };
  }
});

// The client's second run: the configuration it saved after Authenticate now holds the
// issued certificate (and `ca` = the returned chain), so it connects with mutual TLS and
// skips Authenticate.
await step("reconnect_with_certificate", async () => {
  const saved = structuredClone(client.config);
  if (!saved?.credential?.cert) {
    throw new Error("the client saved no certificate after Authenticate");
  }
  const again = new VoltClient(grpc);
  try {
    await again.initialise(saved, { noResolve: true });
    const response = await again.GetResource({ resource_id: config.volt.id });
    if (response?.resource?.id !== config.volt.id) {
      throw new Error(`GetResource over mutual TLS: ${JSON.stringify(response)}`);
    }
  } finally {
    again.close();
  }
  return { identity_did: saved.credential.identity_did || null };
});

client.close();
finish();
