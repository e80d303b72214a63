/*
 * driver.mjs - what the JS benchmark drivers share: the command line, the workloads, the
 * measuring and the output line (interop/bench/README.md). Each driver (web.mjs, grpc.mjs)
 * names its client and says how to connect it and how its wire chunks travel.
 *
 * Each workload warms up for WARM_UP_MS, then runs for --seconds; unary and sql finish the
 * calls already started when the window closes (the window lasts until they are answered),
 * wire counts what arrived when the window closes.
 */

import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

// Set by runDriver: the client's name and transport in messages and the output line, and
// how its wire chunks travel.
let CLIENT = "driver";
let TRANSPORT = "";
let CHUNKS = { encode: (bytes) => bytes, decode: (chunk) => chunk, settleFirst: false };
const WARM_UP_MS = 500;
// Chunks the wire publisher may be ahead of the subscriber (memory stays bounded).
const WIRE_AHEAD = 64;
// Real wire chunks are filled with this byte; the probes start with another one.
const FILL = 0x5a;

// ---------------------------------------------------------------------------------------
// Failure, the command line and the output line.
// ---------------------------------------------------------------------------------------

function die(message) {
  process.stderr.write(`${CLIENT}: ${message}\n`);
  process.exit(1);
}

const describe = (err) => (err instanceof Error ? err.message : err?.message || String(err));
process.on("unhandledRejection", (err) => die(`unhandled rejection: ${describe(err)}`));
process.on("uncaughtException", (err) => die(`uncaught exception: ${describe(err)}`));

/** Parses the driver command line; numbers must be positive. */
function parseArgs(words) {
  const args = { inflight: 1, chunk: 0 };
  const positive = (name, value, integer) => {
    const n = Number(value);
    if (!(n > 0) || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
      die(`${name} needs a positive ${integer ? "integer" : "number"}, not ${JSON.stringify(value)}`);
    }
    return n;
  };
  for (let i = 0; i < words.length; i += 2) {
    const [flag, value] = [words[i], words[i + 1]];
    if (value === undefined) die(`${flag} needs a value`);
    switch (flag) {
      case "--config": args.config = value; break;
      case "--workload":
        if (!["unary", "wire", "sql"].includes(value)) die(`unknown workload ${JSON.stringify(value)}`);
        args.workload = value;
        break;
      case "--seconds": args.seconds = positive(flag, value, false); break;
      case "--inflight": args.inflight = positive(flag, value, true); break;
      case "--chunk": args.chunk = positive(flag, value, true); break;
      case "--wire": args.wire = value; break;
      case "--database": args.database = value; break;
      // Tolerated when it names this driver's own transport (as ours takes it).
      case "--transport":
        if (value !== TRANSPORT) die(`this driver's transport is ${TRANSPORT}, not ${value}`);
        break;
      default: die(`unknown argument ${JSON.stringify(flag)}`);
    }
  }
  if (!args.config || !args.workload || !args.seconds) {
    die("usage: --config FILE --workload unary|wire|sql --seconds S [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]");
  }
  if (args.workload === "wire" && !args.wire) die("--wire is needed");
  if (args.workload === "wire" && !args.chunk) args.chunk = 1024;
  if (args.workload === "sql" && !args.database) die("--database is needed");
  return args;
}

/** Prints the JSON line and exits once it is written (the client keeps handles open). */
function report(args, m) {
  const line = {
    client: CLIENT, transport: TRANSPORT, workload: args.workload, inflight: args.inflight,
    chunk: args.chunk, ops: m.ops, bytes: m.bytes || 0, rows: m.rows || 0, seconds: m.seconds,
    cpu_user_s: m.cpu_user_s, cpu_sys_s: m.cpu_sys_s
  };
  process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(0));
}

// ---------------------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn` (resolving to its counts) and adds its wall time and this process's CPU time. */
async function measured(fn) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now(); // monotonic
  const counts = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { ...counts, seconds, cpu_user_s: cpu.user / 1e6, cpu_sys_s: cpu.system / 1e6 };
}

/** `inflight` loops of GetResource on the Volt, each starting calls until `ms` have passed. */
async function unary(client, voltId, inflight, ms) {
  const deadline = performance.now() + ms;
  let ops = 0;
  const loop = async () => {
    while (performance.now() < deadline) {
      const response = await client.GetResource({ resource_id: voltId });
      if (response?.resource?.id !== voltId) throw new Error(`GetResource: ${JSON.stringify(response)}`);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: inflight }, loop));
  return { ops };
}

/** SELECT * FROM bench, one query after another, rows made JS objects by SqlExecuteJSON. */
async function sql(client, databaseId, ms) {
  const deadline = performance.now() + ms;
  let ops = 0;
  let rows = 0;
  while (performance.now() < deadline) {
    const result = await client.SqlExecuteJSON({ database_id: databaseId, statement: "SELECT * FROM bench" });
    if (!Array.isArray(result)) throw new Error(`SqlExecuteJSON: ${JSON.stringify(result)}`);
    ops++;
    rows += result.length;
  }
  return { ops, rows };
}

/**
 * One subscription and one publisher on the wire for the whole run. Probes are published
 * until one reaches the subscriber (the subscription registers asynchronously), then chunks
 * are published whenever fewer than WIRE_AHEAD are on their way. The warm-up is not counted;
 * the window counts the chunks received until it closes.
 */
async function wire(client, wireId, chunk, warmMs, ms) {
  const payload = CHUNKS.encode(Buffer.alloc(chunk, FILL));
  const sub = client.SubscribeWire({ wire_id: wireId });
  const pub = client.PublishWire({ wire_id: wireId });
  // A client that sends a call's first request on the next tick: let those go out first.
  if (CHUNKS.settleFirst) await new Promise((resolve) => setImmediate(resolve));

  // Any error or end of either call fails the run (until the run is over).
  let over = false;
  const fault = new Promise((_, reject) => {
    const failWith = (what) => (err) => over || reject(new Error(`${what}: ${err ? describe(err) : "ended"}`));
    sub.on("error", failWith("SubscribeWire error"));
    sub.on("end", failWith("SubscribeWire ended early"));
    pub.on("error", failWith("PublishWire error"));
    pub.on("end", failWith("PublishWire ended early"));
    pub.on("data", (p) => p?.status?.message && failWith("PublishWire status")(p.status));
  });
  fault.catch(() => {});
  const guard = (promise) => Promise.race([promise, fault]);

  let sent = 0;
  let received = 0;
  let probed = false;
  let counting = false;
  let ops = 0;
  let bytes = 0;
  const pump = () => {
    while (!over && sent - received < WIRE_AHEAD) {
      pub.write({ chunk: payload });
      sent++;
    }
  };
  sub.on("data", (response) => {
    if (response?.chunk == null) return;
    const data = CHUNKS.decode(response.chunk); // the application's bytes
    if (data[0] !== FILL) {
      probed = true; // a probe
      return;
    }
    received++;
    if (counting) {
      ops++;
      bytes += data.length;
    }
    pump();
  });

  // Probe every 100 ms until the subscriber is live (at most 10 s).
  const probeDeadline = performance.now() + 10_000;
  for (let n = 1; !probed; n++) {
    if (performance.now() > probeDeadline) throw new Error("no probe reached the subscriber within 10 s");
    pub.write({ chunk: CHUNKS.encode(Buffer.from(`probe:${n}`)) });
    for (let t = 0; t < 20 && !probed; t++) await guard(sleep(5));
  }

  pump();
  await guard(sleep(warmMs));
  const result = await measured(() => {
    counting = true;
    ops = 0;
    bytes = 0;
    // The counts are taken in the timer callback itself, the moment the window closes.
    return guard(new Promise((resolve) => setTimeout(() => resolve({ ops, bytes }), ms)));
  });
  over = true;
  sub.write({ stop: true });
  pub.end();
  return result;
}

// ---------------------------------------------------------------------------------------
// Connecting and running.
// ---------------------------------------------------------------------------------------

/**
 * Runs one driver: `client` and `transport` name it, `chunks` says how its wire chunks
 * travel ({encode(Buffer), decode(chunk) -> Buffer, settleFirst}), and `connect(config)`
 * resolves to a connected official client.
 */
export async function runDriver({ client: name, transport, chunks, connect }) {
  CLIENT = name;
  TRANSPORT = transport;
  CHUNKS = chunks;
  const args = parseArgs(process.argv.slice(2));
  // Watchdog: the run fails rather than hangs.
  setTimeout(() => die(`timed out after ${args.seconds + 15} s (a call never completed)`), (args.seconds + 15) * 1000).unref();

  let config;
  try {
    config = JSON.parse(readFileSync(args.config, "utf8"));
  } catch (err) {
    die(`cannot read the configuration ${args.config}: ${describe(err)}`);
  }
  if (!config?.volt?.id || !config.volt.ca_pem) die(`the configuration ${args.config} has no volt.id or volt.ca_pem`);

  let client;
  try {
    client = await connect(config);
  } catch (err) {
    die(`cannot connect: ${describe(err)}`);
  }

  let result;
  try {
    const ms = args.seconds * 1000;
    switch (args.workload) {
      case "unary":
        await unary(client, config.volt.id, args.inflight, WARM_UP_MS);
        result = await measured(() => unary(client, config.volt.id, args.inflight, ms));
        break;
      case "sql":
        await sql(client, args.database, WARM_UP_MS);
        result = await measured(() => sql(client, args.database, ms));
        break;
      case "wire":
        result = await wire(client, args.wire, args.chunk, WARM_UP_MS, ms);
        break;
    }
  } catch (err) {
    die(`${args.workload}: ${describe(err)}`);
  }
  client.close();
  report(args, result);
}
