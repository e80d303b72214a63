#!/usr/bin/env node
/*
 * emulator-web.mjs - drives the OFFICIAL websocket client (@tdxvolt/volt-client-web, its
 * pure-JS build "./js") against a Volt, using the client configuration the Volt issued.
 *
 *     node interop/emulator-web.mjs <client.config.json>
 *
 * The client takes its WebSocket class as a constructor argument and opens
 * `new SocketClass("<wss url>/api")` with no other arguments, so the class we hand it is a
 * subclass of the `ws` package's WebSocket that adds the TLS option `ca` = the Volt CA
 * certificate from the configuration (`volt.ca_pem`). Nothing else is needed to trust the
 * Volt (NODE_EXTRA_CA_CERTS works too but is not required).
 *
 * Steps and output: see lib/scenario.mjs. Exit status 0 when every step passed.
 */

import { Buffer } from "node:buffer";

import {
  authRequestQueue,
  fail,
  finish,
  runScenario,
  startRun,
  step,
  withTimeout
} from "./lib/scenario.mjs";

const config = startRun("web");

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

// What the web SqlExecuteJSON helper makes of a NULL cell: it reads the cell through the
// column's header type (volt-client-base.js, SqlExecuteJSON), so only a DATA_TYPE_NULL
// column gives null; a TEXT or BLOB column gives undefined, INTEGER/REAL give NaN.
function helperNullFor(type) {
  switch (type) {
    case "DATA_TYPE_NULL":
      return null;
    case "DATA_TYPE_TEXT":
    case "DATA_TYPE_BLOB":
      return undefined;
    case "DATA_TYPE_INTEGER":
    case "DATA_TYPE_REAL":
      return NaN;
    default:
      return `unrecognised data type: ${type}`;
  }
}

/** A web client connected with `cfg`, trusting the Volt CA it carries. */
async function connectWeb(cfg) {
  const caPem = cfg.volt.ca_pem;
  class VoltCaWebSocket extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { ca: caPem });
    }
  }
  // The constructor's second argument is unused by the JS build; initialise() takes the
  // configuration (a copy: the client keeps and may update it).
  const connected = new VoltClient(VoltCaWebSocket);
  await connected.initialise(structuredClone(cfg));
  return connected;
}

let client;

await step("connect", async () => {
  const caPem = config.volt.ca_pem;
  if (!caPem) {
    throw new Error("the configuration has no volt.ca_pem to trust the websocket server with");
  }
  if (!config.volt.http_address) {
    throw new Error("the configuration has no volt.http_address");
  }

  client = await connectWeb(config);

  let authenticated = false;
  if (!config.credential?.session_id) {
    // A configuration without a session: ask for one the way the web client does.
    const response = await client.Authenticate();
    if (!response?.session_id) {
      throw new Error(`Authenticate gave no session: ${JSON.stringify(response)}`);
    }
    authenticated = true;
  }
  return { url: `${config.volt.http_address.replace(/^http/, "ws")}/api`, authenticated };
});

await runScenario(client, config, {
  name: "web",
  encodeChunk: (buf) => Buffer.from(buf).toString("base64"),
  decodeChunk: (b64) => Buffer.from(b64, "base64"),
  helperNullFor,
  connectOther: connectWeb,
  // The web client's Connect is a bare streaming call: the application writes the hello.
  listenAuthRequests: async (owner) => {
    const queue = authRequestQueue();
    const call = owner.Connect();
    const acknowledged = new Promise((resolve, reject) => {
      call.on("data", (response) => {
        if (response?.acknowledge) resolve();
        if (response?.evt) queue.push(response.evt);
      });
      call.on("error", reject);
    });
    call.write({ hello: { subscribe_auth_requests: true, ping_interval: 10000 } });
    await withTimeout(acknowledged, 10_000, "the Connect acknowledge");
    return { next: () => queue.next(), close: () => call.end() };
  }
});

client.close();
finish();
