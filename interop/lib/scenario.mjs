/*
 * scenario.mjs - the interop scenario shared by emulator-web.mjs and emulator-grpc.mjs.
 *
 * Both official clients (@tdxvolt/volt-client-web over the websocket gateway and
 * @tdxvolt/volt-client-grpc over native gRPC) expose the same method names, and their
 * streaming calls are EventEmitters with `write(message)`, `end()` and the events
 * "data", "error" and "end". The differences this scenario has to care about are passed
 * in as a small adapter:
 *   - how bytes fields travel (base64 text in the websocket JSON, Buffers in gRPC);
 *   - what the client's own SqlExecuteJSON helper makes of a NULL cell.
 *
 * Output: one JSON line per step on stdout, {"client", "step", "ok", ...details}. The
 * first failure prints {"ok": false, "error"} for its step, repeats the message on
 * stderr and exits with status 1. A watchdog fails the run after OVERALL_TIMEOUT_MS.
 */

import { Buffer } from "node:buffer";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";

export const OVERALL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 20_000;
const WAIT_TIMEOUT_MS = 10_000;

let runName = "interop";
let currentStep = "startup";

function emit(record) {
  process.stdout.write(`${JSON.stringify({ client: runName, ...record })}\n`);
}

/** Prints the failure of the current step and exits with status 1. */
export function fail(message) {
  emit({ step: currentStep, ok: false, error: message });
  process.stderr.write(`${runName}: step "${currentStep}" failed: ${message}\n`);
  process.exit(1);
}

function describeError(err) {
  if (err instanceof Error) {
    const extra = [];
    if (err.code !== undefined) extra.push(`code ${err.code}`);
    if (err.description) extra.push(`description ${JSON.stringify(err.description)}`);
    if (err.details && err.details !== err.message) extra.push(`details ${JSON.stringify(err.details)}`);
    return extra.length ? `${err.message} (${extra.join(", ")})` : err.message;
  }
  // e.g. the websocket ErrorEvent the web client rejects with when the socket fails to open.
  if (err && typeof err === "object") {
    if (err.error instanceof Error) return describeError(err.error);
    if (typeof err.message === "string" && err.message) return err.message;
    try {
      return JSON.stringify(err);
    } catch {
      return Object.prototype.toString.call(err);
    }
  }
  return String(err);
}

/**
 * Sets up the run: the name used in every output line, the watchdog, and handlers that turn
 * stray errors into a clean failure. Returns the parsed client configuration.
 */
export function startRun(name, { overallTimeoutMs = OVERALL_TIMEOUT_MS } = {}) {
  runName = name;
  const timer = setTimeout(
    () => fail(`overall timeout: the scenario did not finish within ${overallTimeoutMs / 1000} s`),
    overallTimeoutMs
  );
  timer.unref();
  process.on("unhandledRejection", (err) => fail(`unhandled rejection: ${describeError(err)}`));
  process.on("uncaughtException", (err) => fail(`uncaught exception: ${describeError(err)}`));

  const path = process.argv[2];
  if (!path) {
    fail(`usage: node ${process.argv[1]} <client config JSON path>`);
  }
  let config;
  try {
    config = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    fail(`cannot read the client configuration ${path}: ${describeError(err)}`);
  }
  if (!config?.volt?.id) {
    fail(`the client configuration ${path} has no volt.id`);
  }
  return config;
}

/**
 * The second client's configuration (the script's second argument), for the access-control
 * step: a client the Volt issued besides the first one, and so not the Volt's owner.
 */
export function secondConfig() {
  const path = process.argv[3];
  if (!path) {
    fail(`usage: node ${process.argv[1]} <client config JSON path> <second client config JSON path>`);
  }
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    return fail(`cannot read the second client configuration ${path}: ${describeError(err)}`);
  }
}

/**
 * A queue of the auth-request events a Connect stream delivers: `push` each event as it
 * comes, `next()` resolves with the next one (within WAIT_TIMEOUT_MS).
 */
export function authRequestQueue() {
  const queued = [];
  const waiting = [];
  return {
    push(evt) {
      const request = evt?.connect_auth_request;
      if (!request) return;
      const waiter = waiting.shift();
      if (waiter) waiter(request);
      else queued.push(request);
    },
    next() {
      if (queued.length) return Promise.resolve(queued.shift());
      return withTimeout(new Promise((resolve) => waiting.push(resolve)), WAIT_TIMEOUT_MS, "an auth request event");
    }
  };
}

/** Loads the official gRPC client and its gRPC module, or fails the run saying how to. */
export async function loadGrpcClient() {
  try {
    const { default: grpc } = await import("@grpc/grpc-js");
    const { VoltClient } = await import("@tdxvolt/volt-client-grpc");
    return { grpc, VoltClient };
  } catch (err) {
    return fail(
      `cannot load the official client packages (${err.message}); run \`npm ci --prefix interop\` first`
    );
  }
}

/** Blocks the event loop for `ms`: an application busy with work of its own. */
export function busyFor(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // The application is busy: no timers or I/O run meanwhile.
  }
}

/**
 * The official gRPC client, connected for a Connect session run by a script: it pings every
 * `pingEveryMs` and never reconnects by itself (a drop must show as one).
 */
export async function connectForSession(VoltClient, grpc, config, pingEveryMs) {
  const client = new VoltClient(grpc);
  await step("connect", async () => {
    const settings = structuredClone(config);
    // Read by the client's Connect session (VoltConnection), in milliseconds.
    settings.pingInterval = pingEveryMs;
    settings.autoReconnect = false;
    await client.initialise(settings, { noResolve: true });
    return { address: config.volt.address };
  });
  return client;
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs one step: `fn` returns the details to print. Any error (or a step taking longer than
 * `timeoutMs`, STEP_TIMEOUT_MS by default) fails the run.
 */
export async function step(name, fn, { timeoutMs = STEP_TIMEOUT_MS } = {}) {
  currentStep = name;
  const started = Date.now();
  let details;
  try {
    details = await withTimeout(Promise.resolve().then(fn), timeoutMs, `step ${name}`);
  } catch (err) {
    fail(describeError(err));
  }
  emit({ step: name, ok: true, ms: Date.now() - started, ...(details || {}) });
  return details;
}

export function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

export function checkEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(
      `${what}: expected ${JSON.stringify(expected)} but got ${JSON.stringify(actual)}`
    );
  }
}

/** Finishes the run successfully. */
export function finish(extra = {}) {
  currentStep = "done";
  emit({ step: "done", ok: true, ...extra });
  process.exit(0);
}

// ---------------------------------------------------------------------------
// Streaming call helpers.
// ---------------------------------------------------------------------------

/**
 * Collects everything a streaming call emits until it ends. Resolves {data: [...]} on "end";
 * rejects with the call's error.
 */
function collect(call, what) {
  return new Promise((resolve, reject) => {
    const data = [];
    call.on("data", (payload) => data.push(payload));
    call.on("error", (err) => reject(err));
    call.on("end", () => resolve({ data }));
  }).then(
    (result) => result,
    (err) => {
      throw new Error(`${what}: ${describeError(err)}`);
    }
  );
}

// ---------------------------------------------------------------------------
// Test data.
// ---------------------------------------------------------------------------

const TABLE = "interop_items";

// Column order of the SELECT below.
const COLUMNS = ["id", "name", "qty", "price", "note"];

// The rows inserted and expected back, as [kind, value] per column. NULLs are kept to the
// TEXT column `note`, whose header type stays TEXT (see checkSqlHelperRows).
const ROWS = [
  [["integer", 1], ["text", "alpha"], ["integer", 3], ["real", 1.5], ["text", "first"]],
  [["integer", 2], ["text", 'beta "quoted" \u2713 \u00e9'], ["integer", -42], ["real", -0.25], ["null", null]],
  [["integer", 3], ["text", "gamma"], ["integer", 9007199254740991], ["real", 3.14159], ["text", "it's"]],
  [["integer", 4], ["text", ""], ["integer", 0], ["real", 0], ["text", "zero values"]],
  [["integer", 5], ["text", "epsilon"], ["integer", 7], ["real", 2.5e10], ["null", null]]
];

function sqlLiteral([kind, value]) {
  switch (kind) {
    case "null":
      return "NULL";
    case "text":
      return `'${value.replace(/'/g, "''")}'`;
    case "real":
      // Keep a decimal point so SQLite stores a REAL even for whole numbers.
      return Number.isInteger(value) ? `${value}.0` : String(value);
    default:
      return String(value);
  }
}

function bulkStatements() {
  return [
    `CREATE TABLE ${TABLE} (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT)`,
    ...ROWS.map(
      (row) => `INSERT INTO ${TABLE} (${COLUMNS.join(", ")}) VALUES (${row.map(sqlLiteral).join(", ")})`
    )
  ];
}

const SELECT = `SELECT ${COLUMNS.join(", ")} FROM ${TABLE} ORDER BY id`;

/** The rows as SqlExecuteJSON should return them. */
function expectedObjects() {
  return ROWS.map((row) =>
    Object.fromEntries(row.map(([, value], i) => [COLUMNS[i], value]))
  );
}

/**
 * A response cell as [kind, value], for both forms: the websocket JSON object with exactly
 * one of text/integer/real/blob/null, or the protobufjs object whose `data` names the oneof
 * member that is set. 64-bit integers may arrive as strings; they are compared as numbers
 * (all test values are safe integers).
 */
function cellKindValue(cell) {
  const kinds = ["text", "integer", "real", "blob", "null"];
  let kind;
  if (typeof cell?.data === "string") {
    kind = cell.data;
  } else {
    const present = kinds.filter((k) => cell && cell[k] !== undefined && cell[k] !== null);
    if (present.length !== 1) {
      throw new Error(`a cell does not carry exactly one value: ${JSON.stringify(cell)}`);
    }
    kind = present[0];
  }
  const raw = cell[kind];
  switch (kind) {
    case "null":
      if (raw !== true) throw new Error(`a null cell is not {"null": true}: ${JSON.stringify(cell)}`);
      return ["null", null];
    case "integer": {
      const n = typeof raw === "string" ? Number(raw) : raw;
      if (!Number.isSafeInteger(n)) throw new Error(`integer cell not an integer: ${JSON.stringify(cell)}`);
      return ["integer", n];
    }
    case "real": {
      const n = typeof raw === "string" ? Number(raw) : raw;
      return ["real", n];
    }
    default:
      return [kind, raw];
  }
}

// ---------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------

/**
 * Runs steps a-d on a connected client.
 *
 * adapter: {
 *   name,                          // "web" | "grpc"
 *   encodeChunk(Buffer) -> value   // a bytes field for a request
 *   decodeChunk(value) -> Buffer   // a bytes field from a response
 *   helperNullFor(type) -> value   // what the client's SqlExecuteJSON yields for a NULL
 *                                  //   cell in a column whose header type is `type`
 * }
 */
/**
 * Publishes one chunk of `text` to `wireId` in a PublishWire call of its own, and waits for
 * the call to end; a status with a message or an error fails it.
 */
async function publishOnce(client, adapter, wireId, text) {
  const publisher = client.PublishWire({ wire_id: wireId });
  const ended = new Promise((resolve, reject) => {
    publisher.on("end", resolve);
    publisher.on("error", (err) => reject(new Error(`PublishWire error: ${describeError(err)}`)));
    publisher.on("data", (payload) => {
      if (payload?.status?.message) {
        reject(new Error(`PublishWire status: ${JSON.stringify(payload.status)}`));
      }
    });
  });
  ended.catch(() => {});
  // The gRPC client sends a call's first request on the next tick: let it go first.
  await new Promise((resolve) => setImmediate(resolve));
  publisher.write({ chunk: adapter.encodeChunk(Buffer.from(text)) });
  publisher.end();
  await withTimeout(ended, WAIT_TIMEOUT_MS, `PublishWire to ${wireId} to end`);
}

export async function runScenario(client, config, adapter) {
  const voltId = config.volt.id;
  const tag = `${adapter.name}-${randomBytes(4).toString("hex")}`;

  // a. GetResource on the Volt's own id.
  await step("get_resource", async () => {
    const response = await client.GetResource({ resource_id: voltId });
    check(response && response.resource, `no resource in the response: ${JSON.stringify(response)}`);
    checkEqual(response.resource.id, voltId, "resource.id");
    return { resource_id: response.resource.id, name: response.resource.name };
  });

  // b. A fresh database, a table with five rows, read back.
  let databaseId;
  await step("create_database", async () => {
    const name = `interop-${tag}`;
    const response = await client.CreateDatabase({ name });
    check(response && response.resource, `no resource in the response: ${JSON.stringify(response)}`);
    databaseId = response.resource.id;
    check(typeof databaseId === "string" && databaseId.length > 0, "the new database has no id");
    checkEqual(response.resource.name, name, "resource.name");
    return { database_id: databaseId, name };
  });

  await step("bulk_update", async () => {
    const statement = bulkStatements();
    const response = await client.BulkUpdate({ database_id: databaseId, statement });
    check(!response?.status?.message, `BulkUpdate status: ${JSON.stringify(response?.status)}`);
    return { statements: statement.length };
  });

  let header;
  await step("sql_execute_raw", async () => {
    const call = client.SqlExecute({ start: { database_id: databaseId, statement: SELECT } });
    const { data } = await withTimeout(collect(call, "Execute"), WAIT_TIMEOUT_MS, "the end of Execute");
    const headers = data.filter((d) => d.header);
    const rows = data.filter((d) => d.row);
    checkEqual(headers.length, 1, "number of header messages");
    header = headers[0].header;
    checkEqual(
      header.column.map((c) => c.name),
      COLUMNS,
      "header column names"
    );
    // Both SqlExecuteJSON helpers need usable header types; the web one decodes every cell
    // by its column's header type.
    checkEqual(
      header.column.map((c) => c.type),
      ["DATA_TYPE_INTEGER", "DATA_TYPE_TEXT", "DATA_TYPE_INTEGER", "DATA_TYPE_REAL", "DATA_TYPE_TEXT"],
      "header column types"
    );
    checkEqual(rows.length, ROWS.length, "number of row messages");
    rows.forEach((r, i) => {
      checkEqual(r.row.column.map(cellKindValue), ROWS[i], `row ${i + 1} cells`);
    });
    return {
      header_types: header.column.map((c) => c.type),
      rows: rows.length,
      messages: data.length
    };
  });

  await step("sql_execute_json", async () => {
    const rows = await client.SqlExecuteJSON({ database_id: databaseId, statement: SELECT });
    check(Array.isArray(rows), `SqlExecuteJSON did not return an array: ${JSON.stringify(rows)}`);
    // The helpers map a NULL cell by header type (web) or by the cell itself (gRPC); what
    // the helper yields for NULL in our TEXT column is the adapter's to say.
    const expected = expectedObjects().map((obj) => {
      const out = { ...obj };
      for (const [i, name] of COLUMNS.entries()) {
        if (out[name] === null) out[name] = adapter.helperNullFor(header.column[i].type);
      }
      return out;
    });
    checkEqual(rows, expected, "SqlExecuteJSON rows");
    return { rows: rows.length };
  });

  // c. A wire: subscribe, publish three chunks, receive them whole and in order, stop.
  let wireId;
  await step("save_wire", async () => {
    const name = `interop-wire-${tag}`;
    const response = await client.SaveWire({ resource: { name }, create: true });
    check(response && response.resource, `no resource in the response: ${JSON.stringify(response)}`);
    wireId = response.resource.id;
    check(typeof wireId === "string" && wireId.length > 0, "the new wire has no id");
    return { wire_id: wireId, name };
  });

  const chunks = [
    Buffer.from(Array.from({ length: 16 }, (_, i) => i)),
    (() => {
      const big = randomBytes(100 * 1024);
      big[0] = 0xff; // never looks like a probe
      return big;
    })(),
    Buffer.from("last chunk \u2713", "utf8")
  ];
  const probePrefix = Buffer.from("probe:");
  const isProbe = (buf) => buf.length >= probePrefix.length && buf.subarray(0, probePrefix.length).equals(probePrefix);

  let subscriber;
  let subscriberEnded;
  let subscriberEndedAt = 0;
  const received = [];
  let probesSeen = 0;
  let onProbe = () => {};

  await step("subscribe_and_publish", async () => {
    subscriber = client.SubscribeWire({ wire_id: wireId });
    subscriberEnded = new Promise((resolve, reject) => {
      subscriber.on("end", () => {
        subscriberEndedAt = Date.now();
        resolve();
      });
      subscriber.on("error", (err) => reject(new Error(`SubscribeWire error: ${describeError(err)}`)));
    });
    subscriberEnded.catch(() => {});
    subscriber.on("data", (payload) => {
      if (payload.chunk === undefined || payload.chunk === null) {
        return; // e.g. an empty status
      }
      const buf = adapter.decodeChunk(payload.chunk);
      if (isProbe(buf)) {
        probesSeen++;
        onProbe();
      } else {
        received.push(buf);
      }
    });

    const publisher = client.PublishWire({ wire_id: wireId });
    const publisherEnded = new Promise((resolve, reject) => {
      publisher.on("end", resolve);
      publisher.on("error", (err) => reject(new Error(`PublishWire error: ${describeError(err)}`)));
      publisher.on("data", (payload) => {
        if (payload?.status?.message) {
          reject(new Error(`PublishWire status: ${JSON.stringify(payload.status)}`));
        }
      });
    });
    publisherEnded.catch(() => {});
    // The gRPC client sends a streaming call's first request on the next tick
    // (grpc-call.js, GRPCCall.start) but later write()s at once: let the first one go out
    // before writing more, or the chunks would overtake the wire_id request.
    await new Promise((resolve) => setImmediate(resolve));

    // The subscription is registered asynchronously; publish probes until one arrives so
    // that none of the real chunks can be published before the subscriber is listening.
    const firstProbe = new Promise((resolve) => {
      onProbe = resolve;
    });
    let probeNumber = 0;
    const sendProbe = () => publisher.write({ chunk: adapter.encodeChunk(Buffer.from(`probe:${++probeNumber}`)) });
    sendProbe();
    const prober = setInterval(sendProbe, 100);
    try {
      await withTimeout(
        Promise.race([firstProbe, subscriberEnded.then(() => { throw new Error("the subscription ended early"); }), publisherEnded.then(() => { throw new Error("PublishWire ended early"); })]),
        WAIT_TIMEOUT_MS,
        "a probe chunk to reach the subscriber"
      );
    } finally {
      clearInterval(prober);
    }
    onProbe = () => {};

    for (const chunk of chunks) {
      publisher.write({ chunk: adapter.encodeChunk(chunk) });
    }

    const allReceived = new Promise((resolve) => {
      const poll = setInterval(() => {
        if (received.length >= chunks.length) {
          clearInterval(poll);
          resolve();
        }
      }, 10);
    });
    await withTimeout(
      Promise.race([allReceived, subscriberEnded.then(() => { throw new Error("the subscription ended before every chunk arrived"); })]),
      WAIT_TIMEOUT_MS,
      `${chunks.length} chunks (received ${received.length} so far)`
    );
    checkEqual(received.length, chunks.length, "number of chunks received");
    chunks.forEach((chunk, i) => {
      const got = received[i];
      if (!got.equals(chunk)) {
        throw new Error(
          `chunk ${i + 1}: sent ${chunk.length} bytes, received ${got.length} bytes that differ` +
            (got.length === chunk.length ? "" : " in length")
        );
      }
    });

    publisher.end();
    await withTimeout(publisherEnded, WAIT_TIMEOUT_MS, "PublishWire to end after the client ended its side");

    return {
      probes_published: probeNumber,
      probes_received: probesSeen,
      chunk_sizes: chunks.map((c) => c.length)
    };
  });

  await step("stop_subscription", async () => {
    check(
      !subscriberEndedAt,
      "the subscription ended on its own (after PublishWire ended) before {stop: true} was sent"
    );
    // Give a premature end a moment to show before stopping.
    await new Promise((resolve) => setTimeout(resolve, 200));
    check(!subscriberEndedAt, "the subscription ended on its own before {stop: true} was sent");
    subscriber.write({ stop: true });
    await withTimeout(subscriberEnded, WAIT_TIMEOUT_MS, "SubscribeWire to end after {stop: true}");
    checkEqual(received.length, chunks.length, "chunks received in all (no extra chunks)");
    return {};
  });

  // e. Resources saved as the vendor's helpers (@tdxvolt/volt-utility) make them, with the
  //    `volt:` kinds: they work as a database and a wire, and carry millisecond timestamps.
  await step("vendor_kinds", async () => {
    const before = Date.now();
    const db = await client.SaveResource({
      resource: { name: `kinds-db-${tag}`, kind: ["volt:database", "volt:sqlite-database"] },
      create: true
    });
    check(db && db.resource, `no resource in the response: ${JSON.stringify(db)}`);
    const rows = await withTimeout(
      client.SqlExecuteJSON({ database_id: db.resource.id, statement: "SELECT 41 + 1 AS answer" }),
      WAIT_TIMEOUT_MS,
      "a query on the saved database"
    );
    checkEqual(rows, [{ answer: 42 }], "rows of a query on a volt:sqlite-database resource");
    // uint64 arrives as a number, a string or a Long, depending on the client.
    const created = Number(String(db.resource.created));
    check(
      created >= before - 1000 && created <= Date.now() + 1000,
      `created is not milliseconds since the epoch: ${db.resource.created} (now ${Date.now()})`
    );

    const wire = await client.SaveResource({
      resource: { name: `kinds-wire-${tag}`, kind: ["volt:wire"] },
      create: true
    });
    check(wire && wire.resource, `no resource in the response: ${JSON.stringify(wire)}`);
    await publishOnce(client, adapter, wire.resource.id, "to a volt:wire");
    return { database_id: db.resource.id, wire_id: wire.resource.id, created };
  });

  // f. An `@alias` stands for the resource's id, as the docs publish to `@demo-wire`.
  await step("alias", async () => {
    const alias = `demo-wire-${tag}`;
    const saved = await client.SaveWire({ resource: { name: alias, alias: [alias] }, create: true });
    check(saved && saved.resource, `no resource in the response: ${JSON.stringify(saved)}`);
    const found = await client.GetResource({ resource_id: `@${alias}` });
    checkEqual(found?.resource?.id, saved.resource.id, "the resource GetResource finds by alias");
    await publishOnce(client, adapter, `@${alias}`, "to an alias");
    return { alias: `@${alias}`, wire_id: saved.resource.id };
  });

  // f2. A persistent wire, made as users make one: a wire that is also a database, with the
  //     persist attributes; what is published to it is read back as rows of its table.
  await step("persistent_wire", async () => {
    const saved = await client.SaveResource({
      resource: {
        name: `persistent-wire-${tag}`,
        kind: ["volt:wire", "volt:database", "volt:sqlite-database"],
        attribute: [
          { attribute_id: "volt:wire-persist", value: [{ boolean: true }] },
          { attribute_id: "volt:wire-persist-table", value: [{ string: "wire_data" }] }
        ]
      },
      create: true
    });
    check(saved && saved.resource, `no resource in the response: ${JSON.stringify(saved)}`);
    const id = saved.resource.id;
    const messages = ["first reading", "second reading", "third reading"];
    for (const text of messages) {
      await publishOnce(client, adapter, id, text);
    }
    const rows = await withTimeout(
      client.SqlExecuteJSON({
        database_id: id,
        statement: "SELECT id, received_at, publisher, CAST(chunk AS TEXT) AS text FROM wire_data ORDER BY id"
      }),
      WAIT_TIMEOUT_MS,
      "the wire's history"
    );
    check(Array.isArray(rows), `SqlExecuteJSON did not return an array: ${JSON.stringify(rows)}`);
    checkEqual(rows.map((r) => r.text), messages, "the chunks stored in wire_data, in order");
    const now = Date.now();
    for (const row of rows) {
      const at = Number(String(row.received_at));
      check(at > now - 60_000 && at <= now + 1000, `received_at is not a recent time in ms: ${row.received_at}`);
      check(typeof row.publisher === "string" && row.publisher.length > 0, `no publisher: ${JSON.stringify(row)}`);
    }
    return { wire_id: id, rows: rows.length };
  });

  // g. GetResources with wildcards; terms combine with AND unless combine_terms_exclusive.
  await step("get_resources_wildcards", async () => {
    const ids = (response) => (response?.resource ?? []).map((r) => r.id).sort();
    const both = await client.GetResources({ name: [`interop-*-${tag}`], kind: ["volt:w?re"] });
    checkEqual(ids(both), [wireId], "resources named interop-*-<tag> AND of kind volt:w?re");
    const either = await client.GetResources({
      name: [`interop-*-${tag}`],
      kind: ["volt:sqlite-*"],
      id: [databaseId],
      combine_terms_exclusive: true
    });
    check(
      ids(either).includes(wireId) && ids(either).includes(databaseId),
      `combine_terms_exclusive should OR the terms: ${JSON.stringify(ids(either))}`
    );
    return { and: ids(both).length, or: ids(either).length };
  });

  // h. File content well over the 16 MiB the emulator once took (the API allows 64 MB),
  //    written and read back whole.
  await step("large_file_content", async () => {
    const size = 20 * 1024 * 1024;
    const content = randomBytes(size);
    const file = await client.SaveResource({
      resource: { name: `large-${tag}.bin`, kind: ["volt:file"] },
      create: true
    });
    check(file && file.resource, `no resource in the response: ${JSON.stringify(file)}`);
    const set = await client.SetFileContent({
      resource_id: file.resource.id,
      content: adapter.encodeChunk(content)
    });
    check(!set?.status?.message, `SetFileContent status: ${JSON.stringify(set?.status)}`);
    const stored = await client.GetResource({ resource_id: file.resource.id });
    checkEqual(Number(String(stored?.resource?.size)), size, "the stored file's size");
    // grpc-js receives at most 4 MiB by default (a setting of the client's): the content is
    // read back whole over the gateway only.
    if (adapter.name === "web") {
      const got = await client.GetFileContent({ resource_id: file.resource.id });
      const back = adapter.decodeChunk(got.content);
      check(back.equals(content), `read back ${back.length} bytes that differ from the ${size} written`);
    }
    return { bytes: size };
  }, { timeoutMs: 60_000 });

  // d. Execute on a database that does not exist: the client reports the status message.
  await step("sql_error_unknown_database", async () => {
    const missing = randomUUID();
    let error;
    try {
      const rows = await withTimeout(
        client.SqlExecuteJSON({ database_id: missing, statement: "SELECT 1" }),
        WAIT_TIMEOUT_MS,
        "SqlExecuteJSON on an unknown database to fail"
      );
      throw new Error(`SqlExecuteJSON on unknown database ${missing} succeeded with ${JSON.stringify(rows)}`);
    } catch (err) {
      if (err.message.startsWith("SqlExecuteJSON on unknown") || err.message.startsWith("timed out")) {
        throw err;
      }
      error = err;
    }
    const message = error.message || "";
    check(
      /not found/i.test(message) || message.includes(missing),
      `the error message neither says "not found" nor names the id: ${JSON.stringify(message)}`
    );
    return {
      error_class: error.constructor?.name,
      message,
      code: error.code
    };
  });

  // j. Moving and copying resources, the caller's sessions, and what the Volt says of itself.
  await step("resource_management", async () => {
    const folder = async (name) => {
      const made = await client.SaveResource({ resource: { name, kind: ["volt:folder"] }, create: true });
      return made.resource.id;
    };
    const from = await folder(`from-${tag}`);
    const to = await folder(`to-${tag}`);
    const item = await client.SaveResource({
      resource: { name: `moved-${tag}` },
      create: true,
      create_in_parent_id: from
    });
    await client.MoveResource({ resource_id: item.resource.id, from_resource_id: from, to_resource_id: to });
    const ancestors = await client.GetResourceAncestors({ resource_id: item.resource.id });
    checkEqual(ancestors?.ancestor?.[0]?.id, to, "the moved resource's parent");

    await client.CopyResource({ resource_id: databaseId, to_resource_id: to, mode: "COPY_RESOURCE_MODE_COPY" });
    const copies = await client.GetResources({ parent_id: [to], kind: ["volt:sqlite-database"] });
    check(copies?.resource?.length === 1, `one copy in the target folder: ${JSON.stringify(copies)}`);
    const copied = await client.SqlExecuteJSON({
      database_id: copies.resource[0].id,
      statement: `SELECT COUNT(*) AS n FROM ${TABLE}`
    });
    checkEqual(Number(copied?.[0]?.n), expectedObjects().length, "rows in the copied database");

    const sessions = await client.GetSessions({});
    check((sessions?.session ?? []).length >= 1, `GetSessions: ${JSON.stringify(sessions)}`);
    const parameters = await client.GetParameters({});
    checkEqual(parameters?.parameters?.id, voltId, "the Volt's id in its parameters");
    const compatible = await client.CheckCompatibility({
      version: { version_major: 0, version_minor: 20, version_patch: 34 }
    });
    check(compatible?.version, `CheckCompatibility: ${JSON.stringify(compatible)}`);
    return { moved: item.resource.id, copy: copies.resource[0].id, sessions: sessions.session.length };
  });

  // i. Access control: a second client is refused the first client's home folder until the
  //    owner, told of its request over a Connect stream, permits it.
  await step("access_request", async () => {
    const ancestors = await client.GetResourceAncestors({ resource_id: databaseId });
    const homeId = ancestors?.ancestor?.[0]?.id;
    check(homeId, `no home folder above the database: ${JSON.stringify(ancestors)}`);
    const other = await adapter.connectOther(secondConfig());
    const listener = await adapter.listenAuthRequests(client);
    try {
      let refused;
      try {
        const read = await other.GetResource({ resource_id: homeId });
        refused = read?.status?.message ? read.status : null;
      } catch (err) {
        refused = err;
      }
      check(refused, "the second client read the first client's home folder");
      check(
        /permission denied/i.test(refused.message || ""),
        `the refusal does not say "permission denied": ${describeError(refused)}`
      );

      const asked = await other.RequestAccess({ resource_id: homeId, access: "volt:resource-read" });
      check(
        ["POLICY_DECISION_PROMPT", "POLICY_DECISION_PENDING"].includes(asked?.decision),
        `RequestAccess: ${JSON.stringify(asked)}`
      );
      const told = await listener.next();
      const request = JSON.parse(told.context).access_request;
      checkEqual(request.resource_id, homeId, "the requested resource");
      const pending = await client.GetAccess({ resource_id: homeId, decision: "POLICY_DECISION_PENDING" });
      check(
        (pending?.access ?? []).some((a) => a.id === request.id),
        `GetAccess does not list the pending request: ${JSON.stringify(pending)}`
      );
      await client.SetAccessRequestDecision({ id: request.id, decision: "POLICY_DECISION_PERMIT" });

      const again = await other.RequestAccess({ resource_id: homeId, access: "volt:resource-read" });
      checkEqual(again?.decision, "POLICY_DECISION_PERMIT", "the decision once permitted");
      const read = await other.GetResource({ resource_id: homeId });
      checkEqual(read?.resource?.id, homeId, "the home folder read by the second client");
      return { first_decision: asked.decision, request_id: request.id };
    } finally {
      listener.close();
      other.close();
    }
  });
}
