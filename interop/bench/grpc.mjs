#!/usr/bin/env node
/*
 * grpc.mjs - benchmark driver for the official native gRPC client, npm
 * @tdxvolt/volt-client-grpc (with @grpc/grpc-js, as its README prescribes).
 *
 *     node interop/bench/grpc.mjs --config FILE --workload unary|wire|sql --seconds S
 *          [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]
 *
 * Command line, workloads and the one JSON line printed: interop/bench/README.md; the
 * shared parts are in lib/driver.mjs.
 */

import { runDriver } from "./lib/driver.mjs";

const { default: grpc } = await import("@grpc/grpc-js");
const { VoltClient } = await import("@tdxvolt/volt-client-grpc");

await runDriver({
  client: "js-grpc",
  transport: "grpc",
  // Bytes fields are Buffers in this client. It sends a call's first request ({wire_id}) on
  // the next tick but later writes at once: the first ones go out before any chunk.
  chunks: { encode: (bytes) => bytes, decode: (chunk) => chunk, settleFirst: true },
  async connect(config) {
    // The configuration goes in as an object (so the client writes no credential cache back
    // to the file), with `noResolve` (no public DID registry look-up). It connects over TLS
    // to volt.address trusting volt.ca_pem, and calls Authenticate first when the
    // configuration has no client certificate.
    const client = new VoltClient(grpc);
    await client.initialise(structuredClone(config), { noResolve: true });
    return client;
  }
});
