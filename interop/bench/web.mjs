#!/usr/bin/env node
/*
 * web.mjs - benchmark driver for the official websocket client, npm
 * @tdxvolt/volt-client-web (its pure-JS build "./js", websocket protocol v1).
 *
 *     node interop/bench/web.mjs --config FILE --workload unary|wire|sql --seconds S
 *          [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]
 *
 * Command line, workloads and the one JSON line printed: interop/bench/README.md; the
 * shared parts are in lib/driver.mjs.
 */

import { Buffer } from "node:buffer";

import { runDriver } from "./lib/driver.mjs";

const { default: WebSocket } = await import("ws");
const { VoltClient } = await import("@tdxvolt/volt-client-web/js");

await runDriver({
  client: "js-web",
  transport: "websocket",
  // Bytes fields travel as base64 text in this client's JSON.
  chunks: {
    encode: (bytes) => bytes.toString("base64"),
    decode: (chunk) => Buffer.from(chunk, "base64"),
    settleFirst: false
  },
  async connect(config) {
    // The client opens `new SocketClass(url)`; this `ws` subclass makes it trust the Volt CA.
    class VoltCaWebSocket extends WebSocket {
      constructor(address, protocols) {
        super(address, protocols, { ca: config.volt.ca_pem });
      }
    }
    const client = new VoltClient(VoltCaWebSocket);
    await client.initialise(structuredClone(config));
    // A configuration without a session asks for one, as the client's users do.
    if (!config.credential?.session_id) await client.Authenticate();
    return client;
  }
});
