#!/usr/bin/env node
/*
 * grpc-session-events.mjs - the OFFICIAL native gRPC client (@tdxvolt/volt-client-grpc) holding
 * a Connect session with resource events for a while, next to another client of the same Volt:
 *
 *     node interop/grpc-session-events.mjs <client.config.json> [duration_ms]
 *
 * The session pings every 1000 ms and the application blocks its event loop for 40 ms after
 * each ping it sends; it must never reconnect. Meanwhile the script creates a resource named
 * `official-<n>` every second (printing {"step":"created","name"} lines, for the other client
 * to look for in its own session), and collects the resource events its session hears for
 * resources named `ours-*` (made by the other client). At the end it checks it heard at least
 * one, and prints the done line.
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

const DURATION_MS = Number(process.argv[3] || 60_000);
const PING_EVERY_MS = 1000;
const BUSY_AFTER_PING_MS = 40;

const config = startRun("grpc-session-events", { overallTimeoutMs: DURATION_MS + 60_000 });
const { grpc, VoltClient } = await loadGrpcClient();

const client = await connectForSession(VoltClient, grpc, config, PING_EVERY_MS);

await step(
  "session_events",
  async () => {
    let connects = 0;
    let drops = 0;
    let pings = 0;
    const heard = new Set();
    const errors = [];
    client.on("connectionError", (err) => errors.push(err.message));
    client.on("evt", (evt) => {
      const name = evt?.connect_resource?.resource?.name;
      if (typeof name === "string" && name.startsWith("ours-")) {
        heard.add(`${evt.connect_resource.event}:${name}`);
      }
    });
    client.on("ping", () => {
      pings += 1;
    });
    const connected = new Promise((resolve) => {
      client.on("connected", (connection) => {
        if (connection) {
          connects += 1;
          const call = client.connection.call;
          const write = call.write.bind(call);
          call.write = (request) => {
            if (request?.ping) {
              queueMicrotask(() => busyFor(BUSY_AFTER_PING_MS));
            }
            return write(request);
          };
          resolve();
        } else {
          drops += 1;
        }
      });
    });
    await client.connect({ hello: { subscribe_resource_events: true } });
    await connected;
    process.stdout.write(`${JSON.stringify({ client: "grpc-session-events", step: "ready", ok: true })}\n`);

    const started = Date.now();
    let n = 0;
    while (Date.now() - started < DURATION_MS) {
      const name = `official-${n}`;
      n += 1;
      const made = await client.SaveResource({ resource: { name }, create: true });
      check(made?.resource?.id, `SaveResource: ${JSON.stringify(made)}`);
      process.stdout.write(
        `${JSON.stringify({ client: "grpc-session-events", step: "created", ok: true, name })}\n`
      );
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    client.disconnect();
    check(connects === 1, `the session connected ${connects} times`);
    check(drops === 0, `the session was dropped ${drops} times (errors: ${errors.join("; ")})`);
    check(pings >= Math.floor(DURATION_MS / PING_EVERY_MS) - 2, `only ${pings} pings were answered`);
    check(heard.size > 0, "no resource event for the other client's resources");
    return { pings, drops, created: n, heard: [...heard].slice(0, 5), heard_count: heard.size };
  },
  { timeoutMs: DURATION_MS + 30_000 }
);

client.close();
finish();
