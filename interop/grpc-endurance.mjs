#!/usr/bin/env node
/*
 * grpc-endurance.mjs - the OFFICIAL native gRPC client (@tdxvolt/volt-client-grpc) used the
 * way long-running applications use it, against a Volt:
 *
 *     node interop/grpc-endurance.mjs <client.config.json> [calls]
 *
 * 1. `unary_calls`: `calls` (default 20,000) sequential GetResource calls on one connection.
 *    Every one must succeed, and the client must never have to reconnect. (A Volt that resets
 *    each stream it answered before the client's half-close gets its connection closed by
 *    hyper after 1,024 such resets: RESOURCE_EXHAUSTED in the client.)
 * 2. `connect_session`: a Connect session pinging every 50 ms, while the application blocks
 *    its event loop for 40 ms right after each ping it sends. The client reads the
 *    acknowledge's `ping_interval` as the milliseconds it waits for each ping's answer, so a
 *    Volt that says 30 (meaning seconds) has it drop the session after every ping. The
 *    session must stay up across 20 pings.
 *
 * Output: one JSON line per step (see lib/scenario.mjs); exit status 0 when every step passed.
 */

import {
  busyFor,
  check,
  connectForSession,
  finish,
  loadGrpcClient,
  startRun,
  step
} from "./lib/scenario.mjs";

const CALLS = Number(process.argv[3] || 20_000);
const PING_EVERY_MS = 50;
const BUSY_AFTER_PING_MS = 40;
const PINGS = 20;

const config = startRun("grpc-endurance", { overallTimeoutMs: 300_000 });

const { grpc, VoltClient } = await loadGrpcClient();

const client = await connectForSession(VoltClient, grpc, config, PING_EVERY_MS);

await step(
  "unary_calls",
  async () => {
    const started = Date.now();
    for (let i = 0; i < CALLS; i += 1) {
      let response;
      try {
        response = await client.GetResource({ resource_id: config.volt.id });
      } catch (err) {
        throw new Error(`call ${i + 1} of ${CALLS} failed: ${err.message} (code ${err.code})`);
      }
      check(response?.resource?.id === config.volt.id, `call ${i + 1}: ${JSON.stringify(response)}`);
    }
    const ms = Date.now() - started;
    return { calls: CALLS, calls_per_s: Math.round((CALLS * 1000) / ms) };
  },
  { timeoutMs: 240_000 }
);

await step("connect_session", async () => {
  let connects = 0;
  let drops = 0;
  let pings = 0;
  const errors = [];
  client.on("connectionError", (err) => errors.push(err.message));
  const done = new Promise((resolve) => {
    client.on("connected", (connection) => {
      if (connection) {
        connects += 1;
        // The application is busy for a while right after each ping the session sends.
        const call = client.connection.call;
        const write = call.write.bind(call);
        call.write = (request) => {
          if (request?.ping) {
            // Once the client has armed its wait for this ping's answer.
            queueMicrotask(() => busyFor(BUSY_AFTER_PING_MS));
          }
          return write(request);
        };
      } else {
        drops += 1;
        resolve();
      }
    });
    client.on("ping", () => {
      pings += 1;
      if (pings >= PINGS) {
        resolve();
      }
    });
  });
  await client.connect({ hello: {} });
  await done;
  client.disconnect();
  check(connects === 1, `the session connected ${connects} times`);
  check(drops === 0, `the session was dropped after ${pings} answered pings (errors: ${errors.join("; ")})`);
  check(pings >= PINGS, `only ${pings} pings were answered`);
  return { pings, drops };
}, { timeoutMs: 20_000 });

client.close();
finish();
