#!/usr/bin/env node
/*
 * generate-vectors.mjs - known-answer test vectors for tdx-volt, produced by the
 * OFFICIAL tdx Volt JavaScript client (@tdxvolt/volt-client-web@0.20.34).
 *
 * What it does
 *   - Calls the exported helpers of the official js/crypto-utils.js (publicKeyToPem,
 *     privateKeyToPem, publicPemFromPrivatePem, signBase64, signJWT, getIdentityToken,
 *     deriveSharedKey, aesEncrypt, fingerprintFromPem, ...) on inputs derived from fixed
 *     seeds, seed(purpose, i) = sha256("tdx-volt-kat-<purpose>-<i>").
 *   - Drives the official js/volt-client-impl.js (VoltClientImpl) through a fake
 *     in-memory WebSocket class, with this script playing the Volt server for the
 *     websocket protocol v1 (key exchange, invoke, payload/end frames), and records
 *     every frame in both directions plus the events the client emitted.
 *   - Cross-checks the results (round trips, signature verification, node:crypto
 *     re-computation) and throws if anything is inconsistent.
 *   - Writes tests/fixtures/kat-vectors.json (pretty printed, fixed key order).
 *
 * How to run (from the repository root, after `npm install` in interop/):
 *     (cd interop && npm install)
 *     node interop/kat/generate-vectors.mjs
 *
 * Re-running reproduces the file byte for byte except for the fields the official
 * code randomizes internally; they are listed in the "notes" field of the output.
 */

import { Buffer } from "node:buffer";
import nodeCrypto from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { voltUtils } from "@tdxvolt/volt-client-web/js";

// The package's "exports" map only exposes "./js" (index.js), so the internal
// modules are imported by file URL. They resolve to the same module instances that
// index.js uses (same files), so curve identity checks inside the library still work.
const webPackageDir = new URL(
  "../node_modules/@tdxvolt/volt-client-web/",
  import.meta.url
);
const { VoltClientImpl } = await import(
  new URL("js/volt-client-impl.js", webPackageDir).href
);
const { WebSocketRPC } = await import(
  new URL("js/websocket-rpc.js", webPackageDir).href
);

const outputPath = fileURLToPath(
  new URL("../../tests/fixtures/kat-vectors.json", import.meta.url)
);

const {
  aesDecrypt,
  aesEncrypt,
  deriveSharedKey,
  ed25519,
  fingerprintFromPem,
  formatPEM,
  fromBase64,
  getIdentityToken,
  keyFromPem,
  privateKeyToPem,
  publicKeyToPem,
  publicPemFromPrivatePem,
  signBase64,
  signJWT,
  stripPemHeaders,
  toBase64,
  toBase64Url,
  verify,
  x25519
} = voltUtils;

// ---------------------------------------------------------------------------
// Small helpers (ours).
// ---------------------------------------------------------------------------

function check(condition, what) {
  if (!condition) {
    throw new Error(`KAT self-check failed: ${what}`);
  }
}

function seed(purpose, i) {
  return new Uint8Array(
    nodeCrypto.createHash("sha256").update(`tdx-volt-kat-${purpose}-${i}`).digest()
  );
}

// Deterministic byte string of arbitrary length (concatenated seeds).
function seededBytes(purpose, length) {
  const out = new Uint8Array(length);
  for (let offset = 0, block = 0; offset < length; offset += 32, block++) {
    const chunk = seed(`${purpose}-block`, block);
    out.set(chunk.subarray(0, Math.min(32, length - offset)), offset);
  }
  return out;
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const utf8 = (text) => new TextEncoder().encode(text);
const sameBytes = (a, b) => Buffer.from(a).equals(Buffer.from(b));

function concatBytes(...parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function u16be(n) {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

function u64be(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

// Raw 32-byte X25519 public key -> DER SPKI bytes, via the official PEM encoder.
function x25519SpkiDer(rawPublic) {
  return new Uint8Array(
    fromBase64(stripPemHeaders(publicKeyToPem(rawPublic, x25519)))
  );
}

// Independent (node:crypto) view of a PEM public key as raw bytes.
function nodeRawPublic(pem) {
  const jwk = nodeCrypto.createPublicKey(pem).export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
}

function nodeEd25519Verify(publicPem, message, signature) {
  return nodeCrypto.verify(
    null,
    Buffer.from(message),
    nodeCrypto.createPublicKey(publicPem),
    Buffer.from(signature)
  );
}

// ---------------------------------------------------------------------------
// spki: publicKeyToPem(raw, curve)
// ---------------------------------------------------------------------------

const spki = [];
for (const [curveName, curve, count] of [
  ["Ed25519", ed25519, 3],
  ["X25519", x25519, 3]
]) {
  for (let i = 1; i <= count; i++) {
    const rawPublic = curve.getPublicKey(seed(`spki-${curveName.toLowerCase()}`, i));
    const pem = publicKeyToPem(rawPublic, curve);
    check(sameBytes(nodeRawPublic(pem), rawPublic), `spki ${curveName} ${i} node parse`);
    check(
      nodeCrypto.createPublicKey(pem).asymmetricKeyType === curveName.toLowerCase(),
      `spki ${curveName} ${i} key type`
    );
    spki.push({ curve: curveName, raw_public_hex: hex(rawPublic), pem });
  }
}

// ---------------------------------------------------------------------------
// private_keys: privateKeyToPem(seed) / publicPemFromPrivatePem(pem)
// ---------------------------------------------------------------------------

const private_keys = [];
for (let i = 1; i <= 3; i++) {
  const s = seed("ed25519-private", i);
  const pem = privateKeyToPem(s);
  const public_pem = publicPemFromPrivatePem(pem);
  check(sameBytes(keyFromPem(pem).privateKey, s), `private key ${i} round trip`);
  check(public_pem === publicKeyToPem(ed25519.getPublicKey(s)), `private key ${i} public`);
  const nodePriv = nodeCrypto.createPrivateKey(pem);
  check(
    nodeCrypto.createPublicKey(nodePriv).export({ type: "spki", format: "pem" }) === public_pem,
    `private key ${i} node public pem`
  );
  private_keys.push({ seed_hex: hex(s), pem, public_pem });
}

// ---------------------------------------------------------------------------
// encrypted_keys: privateKeyToPem(seed, passphrase) (random salt and iv inside)
// ---------------------------------------------------------------------------

const encrypted_keys = [];
for (const [i, passphrase] of [
  [1, "kat-passphrase-1"],
  [2, "pässwörd ключ 🔑"]
]) {
  const s = seed("ed25519-encrypted", i);
  const pem = privateKeyToPem(s, passphrase);
  check(pem.startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), `encrypted key ${i} label`);
  check(sameBytes(keyFromPem(pem, passphrase).privateKey, s), `encrypted key ${i} round trip`);
  const nodePriv = nodeCrypto.createPrivateKey({ key: pem, passphrase });
  check(
    sameBytes(
      Buffer.from(nodePriv.export({ format: "jwk" }).d, "base64url"),
      s
    ),
    `encrypted key ${i} node/OpenSSL decrypt`
  );
  encrypted_keys.push({ passphrase, pem, seed_hex: hex(s) });
}

// ---------------------------------------------------------------------------
// signatures: signBase64(pem, Uint8Array message)
// ---------------------------------------------------------------------------

const signatures = [];
for (const [i, message] of [
  [1, new Uint8Array(0)],
  [2, utf8("tdx volt known answer")],
  [3, seededBytes("signature-message-3", 100)]
]) {
  const private_pem = private_keys[(i - 1) % private_keys.length].pem;
  const public_pem = private_keys[(i - 1) % private_keys.length].public_pem;
  const signature_b64url = signBase64(private_pem, message);
  const sig = Buffer.from(signature_b64url, "base64url");
  check(sig.length === 64, `signature ${i} length`);
  check(verify(keyFromPem(public_pem).publicKey, message, sig), `signature ${i} verify`);
  check(nodeEd25519Verify(public_pem, message, sig), `signature ${i} node verify`);
  signatures.push({ private_pem, message_hex: hex(message), signature_b64url });
}

// ---------------------------------------------------------------------------
// tokens: signJWT(claims, pem) and getIdentityToken(...)
// ---------------------------------------------------------------------------

function checkJwt(token, publicPem, what) {
  const parts = token.split(".");
  check(parts.length === 3, `${what} has 3 parts`);
  check(
    Buffer.from(parts[0], "base64url").toString("utf8") === '{"alg":"EdDSA","typ":"JWT"}',
    `${what} header`
  );
  check(!/[=+/]/.test(token), `${what} is base64url without padding`);
  const signingInput = utf8(`${parts[0]}.${parts[1]}`);
  check(
    nodeEd25519Verify(publicPem, signingInput, Buffer.from(parts[2], "base64url")),
    `${what} signature`
  );
  return Buffer.from(parts[1], "base64url").toString("utf8");
}

const katAudience = "did:volt:kat-volt";
const katK = stripPemHeaders(
  publicKeyToPem(x25519.getPublicKey(seed("token-k-x25519", 1)), x25519)
);

const tokens = [];
for (const [i, claims] of [
  [1, { aud: katAudience, iat: 1700000000, exp: 1700000120, sub: "kat-session" }],
  [2, { aud: katAudience, iat: 1700000000, exp: 1700000120 }],
  [3, { aud: katAudience, iat: 1700000000, exp: 1700000120, sub: "kat-session", k: katK }]
]) {
  const key = private_keys[(i - 1) % private_keys.length];
  const token = signJWT(claims, key.pem);
  const claims_json = checkJwt(token, key.public_pem, `token ${i}`);
  check(claims_json === JSON.stringify(claims), `token ${i} claims json`);
  tokens.push({
    generator: "signJWT",
    private_pem: key.pem,
    public_pem: key.public_pem,
    claims,
    claims_json,
    token
  });
}

{
  // getIdentityToken(subject, keyFromPem(pem), aud, tunnelling=true): iat/exp come
  // from Date.now() (now - 60, now + 60) and k is a fresh random X25519 key.
  const key = private_keys[0];
  const identity = getIdentityToken("kat-session", keyFromPem(key.pem), katAudience, true);
  const claims_json = checkJwt(identity.token, key.public_pem, "identity token");
  const claims = JSON.parse(claims_json);
  check(
    JSON.stringify(Object.keys(claims)) === '["aud","iat","exp","sub","k"]',
    "identity token claim order"
  );
  check(claims.exp - claims.iat === 120, "identity token ttl window");
  check(
    claims.k === stripPemHeaders(identity.sharedKey.publicKey),
    "identity token k is the stripped ephemeral public PEM"
  );
  check(
    sameBytes(
      x25519SpkiDer(x25519.getPublicKey(identity.sharedKey.key)),
      fromBase64(claims.k)
    ),
    "identity token k matches ephemeral secret"
  );
  tokens.push({
    generator: "getIdentityToken",
    private_pem: key.pem,
    public_pem: key.public_pem,
    claims,
    claims_json,
    token: identity.token,
    k: claims.k,
    k_private_hex: hex(identity.sharedKey.key)
  });
}

// ---------------------------------------------------------------------------
// shared_keys: deriveSharedKey(aPriv, bPub) with x25519
// ---------------------------------------------------------------------------

const shared_keys = [];
for (let i = 1; i <= 3; i++) {
  const aPriv = seed("x25519-a", i);
  const bPriv = seed("x25519-b", i);
  const aPub = x25519.getPublicKey(aPriv);
  const bPub = x25519.getPublicKey(bPriv);
  const shared = deriveSharedKey(aPriv, bPub, x25519);
  check(sameBytes(deriveSharedKey(bPriv, aPub, x25519), shared), `shared key ${i} symmetric`);
  const ikm = x25519.getSharedSecret(aPriv, bPub);
  const nodeHkdf = nodeCrypto.hkdfSync(
    "sha256",
    ikm,
    Buffer.from("a06e10d13fa4445a", "ascii"),
    Buffer.from("tdx-volt-encryption-key-derivation", "ascii"),
    32
  );
  check(sameBytes(new Uint8Array(nodeHkdf), shared), `shared key ${i} node hkdf`);
  shared_keys.push({
    a_private_hex: hex(aPriv),
    a_public_spki_b64: b64(x25519SpkiDer(aPub)),
    b_private_hex: hex(bPriv),
    b_public_spki_b64: b64(x25519SpkiDer(bPub)),
    shared_key_hex: hex(shared)
  });
}

// ---------------------------------------------------------------------------
// aes_cbc: aesEncrypt(key, iv, plaintext)
// ---------------------------------------------------------------------------

const aes_cbc = [];
for (const [i, length] of [0, 1, 15, 16, 17, 100].entries()) {
  const key = seed("aes-key", i + 1);
  const iv = seed("aes-iv", i + 1).subarray(0, 16);
  const plaintext = seededBytes(`aes-plaintext-${length}`, length);
  const ciphertext = aesEncrypt(key, iv, plaintext);
  check(ciphertext.length === (Math.floor(length / 16) + 1) * 16, `aes ${length} padded length`);
  check(sameBytes(aesDecrypt(key, iv, ciphertext), plaintext), `aes ${length} round trip`);
  const cipher = nodeCrypto.createCipheriv("aes-256-cbc", key, iv);
  const nodeCt = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  check(sameBytes(nodeCt, ciphertext), `aes ${length} node`);
  aes_cbc.push({
    key_hex: hex(key),
    iv_hex: hex(iv),
    plaintext_hex: hex(plaintext),
    ciphertext_hex: hex(ciphertext)
  });
}

// ---------------------------------------------------------------------------
// fingerprints: fingerprintFromPem(<PEM string>) as getCallMetadata calls it
// ---------------------------------------------------------------------------

const fingerprints = [];
for (const public_pem of [
  private_keys[0].public_pem,
  private_keys[1].public_pem,
  private_keys[1].public_pem.trimEnd(), // same key, no trailing newline: different hash
  spki.find((entry) => entry.curve === "X25519").pem
]) {
  const fingerprint = fingerprintFromPem(public_pem);
  const expectedHash = nodeCrypto.createHash("sha256").update(public_pem, "utf8").digest();
  check(sameBytes(bs58Decode(fingerprint), expectedHash), "fingerprint = base58(sha256(pem text))");
  fingerprints.push({ public_pem, fingerprint });
}

// raw_key_fingerprints: the gRPC client's Volt fingerprint (volt-credential.js) hashes the
// raw 32-byte Ed25519 public key: fingerprintFromPem(keyFromPem(pem).publicKey).
const raw_key_fingerprints = private_keys.map(({ public_pem }) => {
  const raw = keyFromPem(public_pem).publicKey;
  const fingerprint = fingerprintFromPem(raw);
  const expectedHash = nodeCrypto.createHash("sha256").update(Buffer.from(raw)).digest();
  check(sameBytes(bs58Decode(fingerprint), expectedHash), "fingerprint = base58(sha256(raw key))");
  return { public_pem, fingerprint };
});

// Minimal base58 (bitcoin alphabet) decoder, only used for the self-check above.
function bs58Decode(text) {
  const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  let value = 0n;
  for (const ch of text) {
    const digit = alphabet.indexOf(ch);
    check(digit >= 0, "base58 digit");
    value = value * 58n + BigInt(digit);
  }
  const bytes = [];
  while (value > 0n) {
    bytes.unshift(Number(value & 0xffn));
    value >>= 8n;
  }
  for (const ch of text) {
    if (ch !== "1") break;
    bytes.unshift(0);
  }
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------
// session: the real VoltClientImpl against a scripted server over a fake socket
// ---------------------------------------------------------------------------

class FakeWebSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 1; // OPEN
    // VoltClientImpl's send queue polls bufferedAmount; without a number here
    // (undefined <= n is false) it would wait forever.
    this.bufferedAmount = 0;
    this.sent = [];
    this.closed = false;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeWebSocket.instances.push(this);
    setTimeout(() => this.onopen && this.onopen(), 0);
  }

  send(data) {
    check(data instanceof ArrayBuffer, "client sends ArrayBuffers");
    this.sent.push(new Uint8Array(data.slice(0)));
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.readyState = 3; // CLOSED
    if (this.onclose) this.onclose({ code: 1000 });
  }

  // Server -> client.
  deliver(bytes) {
    const copy = new Uint8Array(bytes);
    this.onmessage({ data: copy.buffer });
  }
}

const settle = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForFrames(socket, count, what) {
  for (let waited = 0; socket.sent.length < count; waited += 5) {
    if (waited > 2000) {
      throw new Error(`timed out waiting for ${what} (have ${socket.sent.length}, want ${count})`);
    }
    await settle(5);
  }
  // Give the client a moment to send anything unexpected, then insist on the count.
  await settle();
  check(socket.sent.length === count, `${what}: exactly ${count} frames sent so far`);
}

function parseClientFrame(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let index = 0;
  const version = view.getUint8(index++);
  const type = view.getUint8(index++);
  const callId = view.getBigUint64(index);
  index += 8;
  const metaLength = view.getUint16(index);
  index += 2;
  const meta = new TextDecoder().decode(bytes.subarray(index, index + metaLength));
  index += metaLength;
  check(version === 1, "client frame version 1");
  if (type === 1) {
    const sigLength = view.getUint8(index++);
    const signature = bytes.subarray(index, index + sigLength);
    index += sigLength;
    const claimsLength = view.getUint16(index);
    index += 2;
    const claims = bytes.subarray(index, index + claimsLength);
    index += claimsLength;
    check(index === bytes.length, "key exchange frame fully consumed");
    return { type, callId, meta, signature, claims };
  }
  const ivLength = view.getUint8(index++);
  const iv = bytes.subarray(index, index + ivLength);
  index += ivLength;
  return { type, callId, meta, iv, ciphertext: bytes.subarray(index) };
}

function serverKeyExchangeFrame(callId, spkiDer, nonce, signature) {
  return concatBytes(
    new Uint8Array([1, 1]),
    u64be(callId),
    new Uint8Array([spkiDer.length]),
    spkiDer,
    new Uint8Array([nonce.length]),
    nonce,
    new Uint8Array([signature.length]),
    signature
  );
}

function serverPayloadFrame(callId, meta, iv, ciphertext) {
  const metaBytes = utf8(meta);
  return concatBytes(
    new Uint8Array([1, 3]),
    u64be(callId),
    u16be(metaBytes.length),
    metaBytes,
    new Uint8Array([iv.length]),
    iv,
    ciphertext
  );
}

const voltSigningSeed = seed("session-volt-ed25519", 1);
const voltPublicPem = publicKeyToPem(ed25519.getPublicKey(voltSigningSeed), ed25519);
const clientSeed = seed("session-client-ed25519", 1);
const clientPrivatePem = privateKeyToPem(clientSeed);
const clientPublicPem = publicPemFromPrivatePem(clientPrivatePem);

const sessionConfig = {
  client_name: "kat-client",
  credential: {
    client_id: "did:volt:kat-client",
    key: clientPrivatePem,
    session_id: "kat-session"
  },
  volt: {
    id: "did:volt:kat-volt",
    http_address: "https://127.0.0.1:9443",
    public_key: voltPublicPem
  }
};

// Observe every event the official WebSocketRPC emits (data / end / error).
const emittedEvents = new Map();
const originalEmit = WebSocketRPC.prototype.emit;
WebSocketRPC.prototype.emit = function (name, ...args) {
  if (!emittedEvents.has(this.id)) emittedEvents.set(this.id, []);
  const value = args[0];
  if (name === "error") {
    emittedEvents.get(this.id).push({
      error: {
        name: value?.name ?? null,
        message: value?.message ?? null,
        code: value?.code ?? null,
        description: value?.description ?? null
      }
    });
  } else if (name === "data") {
    emittedEvents.get(this.id).push({ data: JSON.parse(JSON.stringify(value)) });
  } else if (name === "end") {
    emittedEvents.get(this.id).push({ end: true });
  } else {
    emittedEvents.get(this.id).push({ [name]: value ?? null });
  }
  return originalEmit.call(this, name, ...args);
};

const impl = new VoltClientImpl(FakeWebSocket);

// getCallMetadata is a public method of VoltClientImpl; wrap it so the client's
// ephemeral X25519 secret (generated inside getIdentityToken) is recorded too.
const callMetadata = [];
const originalGetCallMetadata = impl.getCallMetadata.bind(impl);
impl.getCallMetadata = (...args) => {
  const result = originalGetCallMetadata(...args);
  callMetadata.push(result);
  return result;
};

await impl.initialise(sessionConfig);
check(FakeWebSocket.instances.length === 1, "one socket opened");
const socket = FakeWebSocket.instances[0];

// Per-call server state, filled in by the helpers below.
function newCall(callId, method, api, request, nonceLength) {
  return {
    callId,
    method,
    api,
    request,
    serverSecret: seed("session-server-x25519", callId),
    nonce: seededBytes(`session-nonce-${callId}`, nonceLength),
    clientFrames: [],
    serverFrames: [],
    serverBodies: [],
    clientMetas: [],
    clientBodies: [],
    sharedKey: null,
    token: null,
    claimsJson: null,
    ephemeralSecret: null,
    serverIvCounter: 0,
    frameTypes: []
  };
}

function takeClientFrames(call, fromIndex) {
  const frames = socket.sent.slice(fromIndex);
  for (const bytes of frames) {
    const frame = parseClientFrame(bytes);
    check(frame.callId === BigInt(call.callId), `frame belongs to call ${call.callId}`);
    call.clientFrames.push(bytes);
    call.clientMetas.push(frame.meta);
    if (frame.type === 1) {
      call.clientBodies.push("");
      handleClientKeyExchange(call, frame);
    } else {
      check(call.sharedKey, "encrypted frame after key exchange");
      const body = aesDecrypt(call.sharedKey, frame.iv, frame.ciphertext).toString("utf8");
      call.clientBodies.push(body);
    }
    call.frameTypes.push(frame.type);
  }
}

function handleClientKeyExchange(call, frame) {
  const claimsJson = new TextDecoder().decode(frame.claims);
  const claims = JSON.parse(claimsJson);
  // The JWT header is not transmitted; the server rebuilds it to verify the signature.
  const signingInput = `${toBase64Url('{"alg":"EdDSA","typ":"JWT"}')}.${toBase64Url(frame.claims)}`;
  check(
    verify(keyFromPem(clientPublicPem).publicKey, signingInput, frame.signature),
    "client key exchange JWT signature"
  );
  const metadata = callMetadata[call.callId - 1];
  check(metadata.token === `${signingInput}.${toBase64Url(frame.signature)}`, "token matches");
  check(claims.k === stripPemHeaders(metadata.sharedKey.publicKey), "claim k = ephemeral key");
  const clientEphemeralPublic = keyFromPem(formatPEM(claims.k, "PUBLIC KEY"), "", x25519).publicKey;

  // Server side of the key exchange.
  const serverPublic = x25519.getPublicKey(call.serverSecret);
  const spkiDer = x25519SpkiDer(serverPublic);
  check(spkiDer.length === 44, "server X25519 SPKI is 44 bytes");
  const signature = ed25519.sign(concatBytes(spkiDer, call.nonce), voltSigningSeed);
  call.sharedKey = deriveSharedKey(call.serverSecret, clientEphemeralPublic, x25519);
  check(
    sameBytes(deriveSharedKey(metadata.sharedKey.key, serverPublic, x25519), call.sharedKey),
    "shared key agrees on both sides"
  );
  call.token = metadata.token;
  call.claimsJson = claimsJson;
  call.ephemeralSecret = metadata.sharedKey.key;
  call.pendingServerFrame = serverKeyExchangeFrame(call.callId, spkiDer, call.nonce, signature);
}

function serverSend(call, frame, body) {
  call.serverFrames.push(frame);
  call.serverBodies.push(body);
  socket.deliver(frame);
}

function serverSendKeyExchange(call) {
  serverSend(call, call.pendingServerFrame, "");
  delete call.pendingServerFrame;
}

function serverSendBody(call, body) {
  const iv = seed(`session-server-iv-${call.callId}`, ++call.serverIvCounter).subarray(0, 16);
  const ciphertext = aesEncrypt(call.sharedKey, iv, utf8(body));
  serverSend(call, serverPayloadFrame(call.callId, "", iv, ciphertext), body);
}

function callRecord(call, extra = {}) {
  return {
    call_id: call.callId,
    api: call.api,
    method: call.method,
    request: call.request ?? null,
    client_frames_hex: call.clientFrames.map(hex),
    client_frame_types: call.frameTypes,
    client_metas: call.clientMetas,
    decrypted_client_bodies: call.clientBodies,
    client_token: call.token,
    client_claims_json: call.claimsJson,
    client_ephemeral_private_hex: hex(call.ephemeralSecret),
    server_x25519_private_hex: hex(call.serverSecret),
    nonce_hex: hex(call.nonce),
    server_frames_hex: call.serverFrames.map(hex),
    server_bodies: call.serverBodies,
    shared_key_hex: hex(call.sharedKey),
    events: emittedEvents.get(call.callId) ?? [],
    ...extra
  };
}

const calls = [];

// Call 1: unaryCall. unaryCall() calls rpc.end() straight away, i.e. before the key
// exchange has completed.
{
  const call = newCall(
    1,
    "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
    "unaryCall",
    { resource_id: "did:volt:kat-volt" },
    16
  );
  let outcome = null;
  const promise = impl
    .unaryCall(call.method, call.request)
    .then((value) => (outcome = { resolved: value }))
    .catch((err) => (outcome = { rejected: err.message }));

  let seen = socket.sent.length;
  await waitForFrames(socket, seen + 1, "call 1 key exchange");
  takeClientFrames(call, seen);
  seen = socket.sent.length;
  serverSendKeyExchange(call);
  await waitForFrames(socket, seen + 2, "call 1 invoke + end");
  takeClientFrames(call, seen);

  check(
    call.clientBodies[1] ===
      JSON.stringify({
        method_invoke: { method_name: call.method, json_request: JSON.stringify(call.request) }
      }),
    "call 1 invoke body"
  );
  check(call.clientBodies[2] === '{"method_end":{"ended":true}}', "call 1 end body");

  serverSendBody(
    call,
    JSON.stringify({
      method_payload: {
        json_payload: JSON.stringify({
          resource: {
            id: "did:volt:kat-volt",
            name: "kat volt",
            kind: "tdx.volt",
            description: "known-answer test resource"
          }
        })
      }
    })
  );
  serverSendBody(call, JSON.stringify({ method_end: {} }));
  await promise;
  await settle();
  check(outcome && "resolved" in outcome, "call 1 promise resolved");
  calls.push(callRecord(call, { result: outcome }));
}

// Call 2: streamingCall with an initial request; the server answers with a payload
// carrying a status error. Afterwards the client calls end() and the server ends.
{
  const call = newCall(
    2,
    "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute",
    "streamingCall",
    { start: { database_id: "db", statement: "select 1" } },
    32
  );
  const rpc = impl.streamingCall(call.method, call.request);
  rpc.on("data", () => {});
  rpc.on("error", () => {});
  rpc.on("end", () => {});

  let seen = socket.sent.length;
  await waitForFrames(socket, seen + 1, "call 2 key exchange");
  takeClientFrames(call, seen);
  seen = socket.sent.length;
  serverSendKeyExchange(call);
  await waitForFrames(socket, seen + 1, "call 2 invoke (no end frame)");
  takeClientFrames(call, seen);

  serverSendBody(
    call,
    JSON.stringify({
      method_payload: {
        json_payload: JSON.stringify({
          status: { code: 0, message: "no such database", description: "d" }
        })
      }
    })
  );
  await settle();
  check(
    (emittedEvents.get(2) ?? []).some((event) => event.error?.message === "no such database"),
    "call 2 emitted the status error"
  );

  seen = socket.sent.length;
  rpc.end();
  await waitForFrames(socket, seen + 1, "call 2 end after key exchange");
  takeClientFrames(call, seen);
  serverSendBody(call, JSON.stringify({ method_end: {} }));
  await settle();
  calls.push(callRecord(call, { client_end_called: "after the error event" }));
}

// Call 3: serverStreamingCall WITHOUT a request. end() runs before the key exchange
// with nothing queued, so the queued "end" (null) is turned into a method_invoke with
// json_request "{}" and no method_end/client_end frame is ever sent.
{
  const call = newCall(
    3,
    "/tdx.volt_api.volt.v1.FileAPI/DownloadFile",
    "serverStreamingCall",
    undefined,
    16
  );
  const rpc = impl.serverStreamingCall(call.method);
  rpc.on("data", () => {});
  rpc.on("error", () => {});
  rpc.on("end", () => {});

  let seen = socket.sent.length;
  await waitForFrames(socket, seen + 1, "call 3 key exchange");
  takeClientFrames(call, seen);
  seen = socket.sent.length;
  serverSendKeyExchange(call);
  await waitForFrames(socket, seen + 1, "call 3 invoke only");
  takeClientFrames(call, seen);

  seen = socket.sent.length;
  rpc.end(); // no-op: end() was already called by serverStreamingCall
  await settle();
  check(socket.sent.length === seen, "call 3 second end() sends nothing");

  serverSendBody(call, JSON.stringify({ method_end: {} }));
  await settle();
  calls.push(callRecord(call, { client_end_called: "by serverStreamingCall before the key exchange; again after invoke (no-op)" }));
}

impl.close();
await settle();
WebSocketRPC.prototype.emit = originalEmit;

const session = {
  url: socket.url,
  volt_signing_seed_hex: hex(voltSigningSeed),
  volt_public_pem: voltPublicPem,
  client_private_pem: clientPrivatePem,
  client_seed_hex: hex(clientSeed),
  client_public_pem: clientPublicPem,
  config: sessionConfig,
  calls
};

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

const notes = [
  "Seeds: seed(purpose, i) = sha256(\"tdx-volt-kat-<purpose>-<i>\"); Ed25519/X25519 private keys are such 32-byte seeds.",
  "Non-deterministic fields (randomized or clock-dependent inside the official code; everything else is identical on every run):",
  "encrypted_keys[].pem (random PBKDF2 salt and AES IV inside privateKeyToPem; verify by decrypting to seed_hex with the passphrase);",
  "tokens[3] (the getIdentityToken vector: iat = now-60 and exp = now+60 from Date.now(), k is a fresh random X25519 key, so claims, claims_json, token, k, k_private_hex change);",
  "session.calls[].client_frames_hex, client_token, client_claims_json, client_ephemeral_private_hex, shared_key_hex (per-call random ephemeral X25519 key and clock-based iat/exp; random AES IV per encrypted client frame),",
  "and session.calls[].server_frames_hex[1..] (the script uses fixed IVs but encrypts under the per-run shared key); server_frames_hex[0] (server key exchange) is deterministic.",
  "fingerprintFromPem: VoltClientImpl.getCallMetadata calls fingerprintFromPem(targetKeyPem) with the PEM STRING, so the fingerprint is base58btc(sha256(UTF-8 bytes of the PEM text, headers and newlines included)), not of the DER; fingerprints[2] is fingerprints[1]'s key without the trailing newline.",
  "session: decrypted_client_bodies and client_metas are aligned with client_frames_hex; the key exchange frame carries no encrypted body, so its entry is \"\".",
  "server_bodies is aligned with server_frames_hex (\"\" for the key exchange frame). events are the data/end/error events the official WebSocketRPC emitted, in order."
].join(" ");

const vectors = {
  source: "@tdxvolt/volt-client-web@0.20.34 js/crypto-utils.js and js/volt-client-impl.js",
  notes,
  spki,
  private_keys,
  encrypted_keys,
  signatures,
  tokens,
  shared_keys,
  aes_cbc,
  fingerprints,
  raw_key_fingerprints,
  session
};

mkdirSync(dirname(outputPath), { recursive: true });
writeFileSync(outputPath, JSON.stringify(vectors, null, 2) + "\n");
console.log(`wrote ${outputPath}`);
