#!/usr/bin/env node
/*
 * sync-web-provider.mjs - two OFFICIAL Yjs providers (@tdxvolt/volt-client-web's SyncProvider,
 * pure-JS build, over the websocket gateway) edit one document at once through a Volt, and a
 * third, read-only one joins later.
 *
 *     node interop/sync-web-provider.mjs <client.config.json> [ALIAS GUID]
 *
 * With ALIAS and GUID the document is one a provider of the caller's already edits (a sync
 * database the caller made, `@ALIAS`, and its document GUID): the official providers join it
 * instead of a fresh one, and `converge` also waits for the caller's edits ("from R. " in the
 * text, map key "r" = "rust", one more list item), so that three providers edit at once.
 *
 * Steps (one JSON line each on stdout, as lib/scenario.mjs prints them):
 *   connect    two web clients with the configuration;
 *   database   SaveSyncDatabase with a fresh alias;
 *   providers  a provider for each client on `@<alias>`, same document guid, both synced;
 *   converge   concurrent text inserts, map sets and an array push on both sides; both
 *              documents end up with the same content, holding every edit;
 *   awareness  A's awareness state (y-protocols) reaches B;
 *   offline    a copy of A's document is edited while not connected, B edits meanwhile; a
 *              provider started on the copy (a reconnect, as the official provider cannot
 *              reconnect itself) merges both ways;
 *   large      A inserts 3 MiB of text (sent and relayed in 1 MiB chunks); B gets all of it;
 *   late       a third provider, read-only, joins and gets that content (its handshake in
 *              several chunks) and `isReadOnly`;
 *   leave      A stops; B hears that A's awareness state is gone;
 *   content    prints the alias, the document guid and the content, for the caller to check
 *              with a client of its own.
 */

import { randomUUID } from "node:crypto";

import { fail, finish, startRun, step, withTimeout } from "./lib/scenario.mjs";

const config = startRun("sync-web");

let WebSocket;
let VoltClient;
let SyncProvider;
let Y;
let awarenessProtocol;
try {
  ({ default: WebSocket } = await import("ws"));
  ({ VoltClient, SyncProvider } = await import("@tdxvolt/volt-client-web/js"));
  Y = await import("yjs");
  awarenessProtocol = await import("y-protocols/awareness");
} catch (err) {
  fail(`cannot load the packages (${err.message}); run \`npm ci --prefix interop\` first`);
}

const WAIT_MS = 15_000;

async function webClient(cfg) {
  const caPem = cfg.volt.ca_pem;
  class TrustingSocket extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { ca: caPem });
    }
  }
  const c = new VoltClient(TrustingSocket);
  await c.initialise(structuredClone(cfg));
  return c;
}

/** The content the scenario compares: the text, the map (keys sorted) and the array. */
function contentOf(doc) {
  const map = doc.getMap("map").toJSON();
  return {
    content: doc.getText("content").toString(),
    map: Object.fromEntries(Object.keys(map).sort().map((k) => [k, map[k]])),
    list: doc.getArray("list").toJSON(),
    bigLength: doc.getText("big").length
  };
}

/** Resolves once `ready()` holds, re-checked after every update of the given documents. */
function whenTrue(docs, ready, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (ready()) {
          for (const d of docs) d.off("update", check);
          resolve();
        }
      };
      for (const d of docs) d.on("update", check);
      check();
    }),
    WAIT_MS,
    what
  );
}

/** A provider for `doc` on `database`, started; resolves once it is synced. */
async function synced(client, database, doc, options = {}) {
  const provider = new SyncProvider(Y, client, database, doc, {
    base64: true,
    awarenessProtocol,
    ...options
  });
  const done = new Promise((resolve, reject) => {
    provider.once("synced", () => resolve());
    provider.once("error", (err) => reject(err));
  });
  provider.startSync();
  await withTimeout(done, WAIT_MS, "the provider's synced event");
  return provider;
}

// With a caller's provider on the document: its database's alias and the document's guid.
const theirs = process.argv[3] && process.argv[4] ? { alias: process.argv[3], guid: process.argv[4] } : null;
const alias = theirs?.alias ?? `interop-sync-${randomUUID().slice(0, 8)}`;
const guid = theirs?.guid ?? `doc-${randomUUID()}`;
let one;
let two;
let docA;
let docB;
let final;

await step("connect", async () => {
  one = await webClient(config);
  two = await webClient(config);
  return {};
});

await step("database", async () => {
  if (theirs) return { alias, made_by: "the caller" };
  const saved = await one.SaveSyncDatabase({
    resource: { name: "interop sync", alias: [alias] },
    create: true
  });
  if (!saved?.resource?.id) throw new Error(`no resource: ${JSON.stringify(saved)}`);
  return { id: saved.resource.id, kind: saved.resource.kind };
});

const providers = [];
await step("providers", async () => {
  docA = new Y.Doc({ guid });
  docB = new Y.Doc({ guid });
  providers.push(await synced(one, `@${alias}`, docA));
  providers.push(await synced(two, `@${alias}`, docB));
  return { guid };
});

await step("converge", async () => {
  docA.transact(() => {
    docA.getText("content").insert(0, "from A. ");
    docA.getMap("map").set("a", 1);
  });
  docB.transact(() => {
    docB.getText("content").insert(0, "from B. ");
    docB.getMap("map").set("b", "two");
    docB.getArray("list").push([1, 2, 3]);
  });
  docA.getArray("list").push(["x"]);
  const complete = (doc) => {
    const c = contentOf(doc);
    return (
      c.content.includes("from A. ") &&
      c.content.includes("from B. ") &&
      c.map.a === 1 &&
      c.map.b === "two" &&
      c.list.length === (theirs ? 5 : 4) &&
      (!theirs || (c.content.includes("from R. ") && c.map.r === "rust"))
    );
  };
  await whenTrue([docA, docB], () => complete(docA) && complete(docB), "both documents to converge");
  const a = contentOf(docA);
  const b = contentOf(docB);
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`diverged: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
  final = a;
  return final;
});

/** Resolves once `ready()` holds, re-checked after every change of `awareness`. */
function whenAware(awareness, ready, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (ready()) {
          awareness.off("change", check);
          resolve();
        }
      };
      awareness.on("change", check);
      check();
    }),
    WAIT_MS,
    what
  );
}

await step("awareness", async () => {
  const [a, b] = providers;
  a.awareness.setLocalStateField("user", { name: "A" });
  await whenAware(
    b.awareness,
    () => b.awareness.getStates().get(docA.clientID)?.user?.name === "A",
    "A's awareness state at B"
  );
  return { seenBy: "B" };
});

await step("offline", async () => {
  const docD = new Y.Doc({ guid });
  Y.applyUpdate(docD, Y.encodeStateAsUpdate(docA));
  docD.getText("content").insert(0, "offline D. ");
  docB.getMap("map").set("online", true);
  await whenTrue([docA], () => docA.getMap("map").get("online") === true, "B's edit at A");
  providers.push(await synced(one, `@${alias}`, docD));
  await whenTrue(
    [docB, docD],
    () =>
      docD.getMap("map").get("online") === true &&
      docB.getText("content").toString().includes("offline D. "),
    "the offline edit and the online one to meet"
  );
  await whenTrue([docA], () => docA.getText("content").toString().includes("offline D. "), "D's edit at A");
  const b = contentOf(docB);
  const d = contentOf(docD);
  if (JSON.stringify(b) !== JSON.stringify(d)) {
    throw new Error(`diverged: ${JSON.stringify(b)} vs ${JSON.stringify(d)}`);
  }
  final = b;
  return final;
});

const LARGE = 3 * 1024 * 1024;
await step("large", async () => {
  const big = "0123456789abcdef".repeat(LARGE / 16);
  docA.getText("big").insert(0, big);
  await whenTrue([docB], () => docB.getText("big").length === LARGE, "3 MiB of text at B");
  if (docB.getText("big").toString() !== big) throw new Error("the large text arrived altered");
  final = contentOf(docB);
  return { bytes: LARGE };
});

await step("late", async () => {
  const docC = new Y.Doc({ guid });
  const third = await synced(two, `@${alias}`, docC, { readOnly: true });
  providers.push(third);
  const c = contentOf(docC);
  if (JSON.stringify(c) !== JSON.stringify(final)) {
    throw new Error(`the late joiner has ${JSON.stringify(c)}, not ${JSON.stringify(final)}`);
  }
  if (!third.isReadOnly) throw new Error("the read-only provider was not told it is read-only");
  return { readOnly: third.isReadOnly };
});

await step("leave", async () => {
  const [a, b] = providers;
  const clientA = docA.clientID;
  a.stopSync();
  await whenAware(b.awareness, () => !b.awareness.getStates().has(clientA), "A's awareness removed at B");
  return { removed: clientA };
});

await step("content", async () => {
  for (const p of providers.slice(1)) p.stopSync();
  return { alias, guid, ...final };
});

one.close();
two.close();
finish();
