#!/usr/bin/env python3
"""Drive the OFFICIAL Python tdx Volt client against a Volt speaking the older protocol.

    python interop/python/legacy_scenario.py <client.config.json>

The client is PyPI `volt_client_web` 0.1.14 (pinned in requirements.txt): JSON text frames
over the websocket gateway, RSA keys, a per-call AES key carried in the identity token. It
opens `wss://.../api` with the default TLS context, so the harness points the environment
variable SSL_CERT_FILE at the Volt CA certificate.

Output: one JSON line per step on stdout,
    {"step": NAME, "ok": true, "result": {...}}
and on the first failure
    {"step": NAME, "ok": false, "error": "..."}
followed by exit status 1 (the last frames seen on the socket go to stderr). A successful run
ends with {"step": "done", "ok": true} and exit status 0. Every wait is bounded by WAIT_S; a
watchdog gives up on the whole run after OVERALL_S.

Steps: connect, get_resource, create_database, bulk_update, sql_execute_json, save_wire,
subscribe_and_publish, stop_subscription, done.

Client quirks this script has to live with (each workaround below names the one it is for):

  Q1  Every call runs its own receive loop on the shared socket. The loops take turns: the
      one that gets websockets' recv() reads the next frame for whichever call it belongs to,
      the others sleep 100 ms and retry. A call's loop stops once the call is complete, and
      `end()` cancels it. So frames are only read while some call is still open: the end of
      the publisher (after `pub.end()` cancelled its own loop) is read by the subscriber's
      loop, and must therefore happen while the subscription is still open.
  Q2  An error on the socket surfaces on whichever call's loop read it, not necessarily on the
      call it concerns; a server `{"error": ...}` frame is not even passed on: handling it
      fails inside the client (an unbound local) and that failure is what gets emitted. The
      script therefore watches the raw frames (without changing them) to report what the
      server actually sent.
  Q3  The client prints its own diagnostics (e.g. "Exception occured in on_message method")
      with print(), i.e. on stdout, which is where our JSON lines go.
  Q4  A streaming call's first request is sent before the caller can attach handlers, and an
      "error" event with no handler raises inside the client's receive loop (pyee). Nothing
      is sent to the subscription or publisher before their handlers are on, and the server
      has nothing to say before that, so this stays harmless here.
  Q5  A call failing with a status payload and then method_end makes the unary helper resolve
      its future twice; the second attempt raises inside a receive loop and kills that task.
      The caller still gets the first (real) error; the leftover task failure is reported.
  Q6  The subscription registers on the server asynchronously after SubscribeWire returns:
      chunks published before that are not delivered. The script publishes probe chunks until
      one arrives, and only then the chunks it checks.
  Q7  The client never closes its socket; the script closes it at the end.
"""

import asyncio
import base64
import contextlib
import json
import os
import secrets
import sys
import threading
import warnings
from collections import deque

OVERALL_S = 60.0
WAIT_S = 30.0
PROBE_INTERVAL_S = 0.1
PROBE_PREFIX = b"probe:"

WIRE_API = "/tdx.volt_api.volt.v1.WireAPI"

TABLE = "items"
COLUMNS = ["id", "name", "qty", "price", "note"]
# The rows inserted and expected back, as the client's SqlExecuteJSON helper maps cells:
# NULL -> None, INTEGER -> int, REAL -> float, TEXT -> str.
ROWS = [
    (1, "alpha", 3, 1.5, "first"),
    (2, "Z\u00fcrich caf\u00e9 \u2615 \u6771\u4eac", 10, 2.75, None),
    (3, "it's negative", -42, -0.25, "quote in the name"),
    (4, "pi", 7, 3.14159, "a real with decimals"),
    (5, "", 9007199254740993, 0.0, "2^53 + 1, empty name, zero real"),
]

# The real chunks of the wire step: short ASCII, about 100 KiB of random bytes (the first
# byte fixed so it can never look like a probe), UTF-8 text with non-ASCII characters.
def real_chunks():
    big = bytearray(secrets.token_bytes(100 * 1024))
    big[0] = 0xFF
    return [b"hello, volt", bytes(big), "last chunk \u2713 \u00e9".encode("utf-8")]


# ---------------------------------------------------------------------------------------------
# Output, failure and the watchdog.
# ---------------------------------------------------------------------------------------------

# Our JSON lines go to the real stdout; sys.stdout is pointed at stderr while the client runs
# (Q3), so nothing the client prints can be mistaken for a step line.
_OUT = sys.stdout
_out_lock = threading.Lock()
_finished = False
_current_step = "startup"
# The last frames in both directions, for the failure report (Q2).
_trace = deque(maxlen=60)
# Every {"error": ...} frame the server sent (Q2: the client loses their text).
_server_errors = []


def _emit(record):
    global _finished
    with _out_lock:
        if _finished:
            return False
        if record.get("step") == "done" or not record.get("ok"):
            _finished = True
        _OUT.write(json.dumps(record, separators=(",", ":")) + "\n")
        _OUT.flush()
        return True


def _dump_trace():
    if _trace:
        sys.__stderr__.write("--- last frames on the socket (oldest first) ---\n")
        for entry in list(_trace):
            sys.__stderr__.write(f"  {entry}\n")
    sys.__stderr__.flush()


def _report_failure(step, message):
    if _emit({"step": step, "ok": False, "error": message}):
        sys.__stderr__.write(f"legacy_scenario: step {step!r} failed: {message}\n")
        _dump_trace()


def _watchdog():
    # Runs on a timer thread, so it fires even if the event loop is stuck.
    _report_failure(_current_step, f"overall timeout: the run did not finish within {OVERALL_S:.0f} s")
    os._exit(1)


class StepFailed(Exception):
    pass


class WaitTimedOut(StepFailed):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def describe(err):
    text = str(err) or type(err).__name__
    if not isinstance(err, StepFailed):
        text = f"{type(err).__name__}: {text}"
    return text


async def bounded(awaitable, what, timeout=WAIT_S):
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise WaitTimedOut(f"timed out after {timeout:g} s waiting for {what}") from None


# ---------------------------------------------------------------------------------------------
# Watching the client (read-only wrappers around its own functions).
# ---------------------------------------------------------------------------------------------

def _summarise_body(body):
    """A short description of a decrypted frame body, without chunk contents."""
    if not isinstance(body, dict):
        return repr(body)[:200]
    if "method_invoke" in body:
        invoke = body["method_invoke"]
        request = invoke.get("json_request") or invoke.get("request")
        return f"method_invoke {invoke.get('method_name')} request {_summarise_json(request)}"
    if "method_payload" in body:
        payload = body["method_payload"]
        inner = payload.get("json_payload", payload.get("payload"))
        return f"method_payload {_summarise_json(inner)}"
    if "method_end" in body:
        return f"method_end {json.dumps(body['method_end'])[:300]}"
    return json.dumps(body)[:300]


def _summarise_json(value):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return repr(value[:200])
    if isinstance(value, dict) and isinstance(value.get("chunk"), str):
        shown = dict(value)
        shown["chunk"] = f"<{len(value['chunk'])} base64 chars>"
        value = shown
    return json.dumps(value)[:300]


def watch_client(client, crypto):
    """Records every frame sent and received, and every call opened, leaving them unchanged.

    The client looks these functions up on the instance (call_internal hands the bound
    send_encrypt/receive_decrypt to each call), so instance attributes are enough.
    Returns the list the calls are collected into.
    """
    calls = []
    original_send = client.send_encrypt
    original_receive = client.receive_decrypt
    original_call = client.call_internal

    async def send_encrypt(metadata, msg):
        _trace.append(f"-> call {msg.get('id')}: {_summarise_body(msg.get('payload'))}")
        return await original_send(metadata, msg)

    async def receive_decrypt(message):
        _trace.append(f"<- {_summarise_frame(client, crypto, message)}")
        return await original_receive(message)

    async def call_internal(*args, **kwargs):
        rpc = await original_call(*args, **kwargs)
        calls.append(rpc)
        return rpc

    client.send_encrypt = send_encrypt
    client.receive_decrypt = receive_decrypt
    client.call_internal = call_internal
    return calls


def _summarise_frame(client, crypto, message):
    try:
        frame = json.loads(message)
    except (TypeError, ValueError):
        return f"not JSON: {message[:200]!r}"
    if not isinstance(frame, dict):
        return f"not an object: {message[:200]!r}"
    if "error" in frame:
        _server_errors.append(frame["error"])
        return f"server error frame {json.dumps(frame)[:300]}"
    invoke_id = frame.get("invoke_id")
    try:
        rpc = client.activeRPCs.get(int(invoke_id))
    except (TypeError, ValueError):
        rpc = None
    if rpc is None:
        return f"call {invoke_id} (not an open call): keys {sorted(frame)}"
    try:
        shared = rpc.metadata["shared_key"]
        body = json.loads(crypto.aes_decrypt(shared["key"], shared["iv"], frame["json_payload"]))
    except Exception as err:  # only a description is wanted here
        return f"call {invoke_id}: cannot decrypt ({describe(err)})"
    return f"call {invoke_id}: {_summarise_body(body)}"


class CallWatch:
    """The events of one streaming call, with bounded waits on them."""

    def __init__(self, rpc, name):
        self.name = name
        self.payloads = []
        self.error = None
        self.ended = False
        self._changed = asyncio.Event()
        rpc.on("data", self._on_data)
        rpc.on("error", self._on_error)
        rpc.on("end", self._on_end)

    def _on_data(self, payload):
        self.payloads.append(payload)
        self._changed.set()

    def _on_error(self, err):
        if self.error is None:
            self.error = err
        self._changed.set()

    def _on_end(self):
        self.ended = True
        self._changed.set()

    def raise_if_failed(self):
        if self.error is not None:
            # Q2: the error may have been read for another call, and a server error frame
            # reaches us only as the client's own failure; name what the server sent.
            message = f"{self.name} error event: {describe(self.error)}"
            if _server_errors:
                message += f" (server error frames so far: {json.dumps(_server_errors)})"
            raise StepFailed(message)

    async def wait(self, predicate, what, timeout=WAIT_S):
        async def until():
            while True:
                self.raise_if_failed()
                if predicate():
                    return
                if self.ended:
                    raise StepFailed(f"{self.name} ended before {what}")
                self._changed.clear()
                await self._changed.wait()

        await bounded(until(), what, timeout)


# ---------------------------------------------------------------------------------------------
# The scenario.
# ---------------------------------------------------------------------------------------------

def sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    # repr keeps a decimal point on floats, so SQLite stores a REAL even for 0.0.
    return repr(value)


def rows_difference(actual, expected):
    """Strict comparison: the same columns in the same order, the same Python types and the
    same values (so 0 is not 0.0). Returns a description of the first difference, or None."""
    if not isinstance(actual, list):
        return f"not a list of rows: {json.dumps(actual)}"
    if len(actual) != len(expected):
        return f"{len(actual)} rows instead of {len(expected)}: {json.dumps(actual)}"
    for number, (got, want) in enumerate(zip(actual, expected), start=1):
        if not isinstance(got, dict) or list(got) != list(want):
            return f"row {number}: columns {json.dumps(got)} instead of {list(want)}"
        for column, value in want.items():
            if type(got[column]) is not type(value) or got[column] != value:
                return (f"row {number} column {column}: {got[column]!r} "
                        f"({type(got[column]).__name__}) instead of {value!r} ({type(value).__name__})")
    return None


async def scenario(config):
    global _current_step
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from volt_client_web import VoltClient
    from volt_client_web import crypto_utils

    volt_id = config["volt"]["id"]
    tag = secrets.token_hex(4)
    state = {}

    async def step(name, body):
        global _current_step
        _current_step = name
        try:
            result = await body()
        except Exception as err:
            message = describe(err)
            if _server_errors and "server error frames" not in message:
                message += f" (server error frames so far: {json.dumps(_server_errors)})"
            _report_failure(name, message)
            return False
        _emit({"step": name, "ok": True, "result": result})
        return True

    # -- connect ---------------------------------------------------------------------------
    async def connect():
        if not os.environ.get("SSL_CERT_FILE"):
            sys.__stderr__.write(
                "legacy_scenario: SSL_CERT_FILE is not set; the Volt's certificate must then "
                "chain to a system CA\n"
            )
        client = VoltClient(config)
        await bounded(client.initialise(), "the websocket to open")
        state["client"] = client
        state["calls"] = watch_client(client, crypto_utils)
        return {"url": client.wsApiUrl, "client_version": VoltClient.__version__}

    # -- unary helpers ---------------------------------------------------------------------
    async def get_resource():
        client = state["client"]
        response = await bounded(client.GetResource({"resource_id": volt_id}), "GetResource")
        check(isinstance(response, dict) and isinstance(response.get("resource"), dict),
              f"no resource in the response: {json.dumps(response)}")
        check(response["resource"].get("id") == volt_id,
              f"resource.id {response['resource'].get('id')!r} is not the Volt id {volt_id!r}")
        return {"resource": response["resource"]}

    async def create_database():
        client = state["client"]
        name = f"interop-py-{tag}"
        response = await bounded(client.CreateDatabase({"name": name}), "CreateDatabase")
        check(isinstance(response, dict) and isinstance(response.get("resource"), dict),
              f"no resource in the response: {json.dumps(response)}")
        database_id = response["resource"].get("id")
        check(isinstance(database_id, str) and database_id,
              f"the new database has no id: {json.dumps(response)}")
        check(response["resource"].get("name") == name,
              f"resource.name {response['resource'].get('name')!r} is not {name!r}")
        state["database_id"] = database_id
        return {"database_id": database_id}

    async def bulk_update():
        client = state["client"]
        statements = [
            f"CREATE TABLE {TABLE}(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT)"
        ] + [
            f"INSERT INTO {TABLE}({', '.join(COLUMNS)}) VALUES ({', '.join(map(sql_literal, row))})"
            for row in ROWS
        ]
        response = await bounded(
            client.BulkUpdate({"database_id": state["database_id"], "statement": statements}),
            "BulkUpdate",
        )
        # The client already turns a status message into an error; this also catches a
        # response shaped unexpectedly.
        status = (response or {}).get("status") or {}
        check(not status.get("message"), f"BulkUpdate status: {json.dumps(status)}")
        # The statements go back so that the Rust side can run the very same ones.
        return {"statements": statements}

    async def sql_execute_json():
        client = state["client"]
        select = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY id"
        rows = await bounded(
            client.SqlExecuteJSON({"start": {"database_id": state["database_id"], "statement": select}}),
            "SqlExecuteJSON",
        )
        expected = [dict(zip(COLUMNS, row)) for row in ROWS]
        difference = rows_difference(rows, expected)
        check(difference is None, f"SqlExecuteJSON rows differ: {difference}")
        return {"statement": select, "rows": rows}

    async def save_wire():
        client = state["client"]
        name = f"interop-py-wire-{tag}"
        future = await bounded(
            client.unary_call(f"{WIRE_API}/SaveWire", {"resource": {"name": name}, "create": True}),
            "SaveWire to be sent",
        )
        response = await bounded(future, "SaveWire")
        check(isinstance(response, dict) and isinstance(response.get("resource"), dict),
              f"no resource in the response: {json.dumps(response)}")
        wire_id = response["resource"].get("id")
        check(isinstance(wire_id, str) and wire_id, f"the new wire has no id: {json.dumps(response)}")
        state["wire_id"] = wire_id
        return {"wire_id": wire_id}

    # -- the wire --------------------------------------------------------------------------
    def chunks_of(watch):
        """Decoded chunks of the subscription, as (is_probe, bytes), in arrival order."""
        out = []
        for payload in watch.payloads:
            check(isinstance(payload, dict) and isinstance(payload.get("chunk"), str),
                  f"a subscription payload is not a chunk: {_summarise_json(payload)}")
            data = base64.b64decode(payload["chunk"], validate=True)
            out.append((data.startswith(PROBE_PREFIX), data))
        return out

    def real_received(watch):
        return [data for is_probe, data in chunks_of(watch) if not is_probe]

    async def subscribe_and_publish():
        client = state["client"]
        wire_id = state["wire_id"]

        sub = await bounded(client.SubscribeWire({"wire_id": wire_id}), "SubscribeWire to be sent")
        sub_watch = CallWatch(sub, "SubscribeWire")
        state["sub"], state["sub_watch"] = sub, sub_watch

        pub = await bounded(client.PublishWire({"wire_id": wire_id}), "PublishWire to be sent")
        pub_watch = CallWatch(pub, "PublishWire")

        # Q6: probe until the subscription delivers.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        probes = 0
        while not any(is_probe for is_probe, _ in chunks_of(sub_watch)):
            sub_watch.raise_if_failed()
            check(not sub_watch.ended, "SubscribeWire ended while probing")
            pub_watch.raise_if_failed()
            check(not pub_watch.ended, "PublishWire ended while probing")
            check(loop.time() < deadline,
                  f"no probe reached the subscriber within {WAIT_S:.0f} s ({probes} published)")
            probes += 1
            await bounded(pub.send({"chunk": base64.b64encode(b"probe:%d" % probes).decode()}),
                          "a probe to be sent")
            # Only the short wait's timeout is expected here; errors and ends still fail.
            with contextlib.suppress(WaitTimedOut):
                await sub_watch.wait(lambda: any(p for p, _ in chunks_of(sub_watch)),
                                     "a probe", timeout=PROBE_INTERVAL_S)

        sent = real_chunks()
        for chunk in sent:
            await bounded(pub.send({"chunk": base64.b64encode(chunk).decode()}), "a chunk to be sent")
        await sub_watch.wait(lambda: len(real_received(sub_watch)) >= len(sent),
                             f"the {len(sent)} chunks on the subscription")
        pub_watch.raise_if_failed()

        arrivals = chunks_of(sub_watch)
        first_real = next(i for i, (is_probe, _) in enumerate(arrivals) if not is_probe)
        check(all(not is_probe for is_probe, _ in arrivals[first_real:]),
              "a probe arrived after the real chunks (out of order)")
        got = [data for _, data in arrivals[first_real:]]
        check(len(got) == len(sent), f"{len(got)} chunks received for {len(sent)} published")
        for i, (want, have) in enumerate(zip(sent, got)):
            check(have == want,
                  f"chunk {i} differs: sent {len(want)} bytes, received {len(have)} bytes")
        state["real_count"] = len(got)

        # Q1: end the publisher while the subscription's receive loop is still running, since
        # pub.end() cancels the publisher's own loop and the server's method_end for the
        # publisher has to be read by some other call's loop.
        await bounded(pub.end(), "the publisher's end to be sent")
        await pub_watch.wait(lambda: pub_watch.ended, "the end of PublishWire")
        for payload in pub_watch.payloads:
            status = (payload or {}).get("status") or {}
            check(not status.get("message"), f"PublishWire status: {json.dumps(status)}")
        # Nothing else may arrive on the subscription while the publisher ends.
        check(len(chunks_of(sub_watch)) == len(arrivals),
              "the subscription received chunks after the published ones")

        return {
            "chunks": [base64.b64encode(data).decode() for data in got],
            "probes_published": probes,
        }

    async def stop_subscription():
        sub, sub_watch = state["sub"], state["sub_watch"]
        before = len(chunks_of(sub_watch))
        await bounded(sub.send({"stop": True}), "the stop request to be sent")
        await sub_watch.wait(lambda: sub_watch.ended, "the end of SubscribeWire")
        sub_watch.raise_if_failed()
        extra = len(chunks_of(sub_watch)) - before
        check(extra == 0, f"{extra} more chunk(s) arrived after the published ones")
        return {"ended": True, "extra_chunks": extra}

    async def done():
        client = state["client"]
        # Q1/Q5: every call should have completed cleanly: no call left open in the client's
        # table, and no receive loop that died with an exception nobody saw.
        open_calls = sorted(client.activeRPCs)
        check(not open_calls, f"calls still open in the client: {open_calls}")
        failures = []
        for rpc in state["calls"]:
            task = rpc.receiving_task
            if task.done() and not task.cancelled() and task.exception() is not None:
                failures.append(f"call {rpc.id} ({rpc.method_name}): {describe(task.exception())}")
        check(not failures, "receive loops failed: " + "; ".join(failures))
        # Q7: the client has no close of its own.
        await bounded(client.websocket.close(), "the websocket close handshake", timeout=10)
        return None

    steps = [
        ("connect", connect),
        ("get_resource", get_resource),
        ("create_database", create_database),
        ("bulk_update", bulk_update),
        ("sql_execute_json", sql_execute_json),
        ("save_wire", save_wire),
        ("subscribe_and_publish", subscribe_and_publish),
        ("stop_subscription", stop_subscription),
    ]
    for name, body in steps:
        if not await step(name, body):
            return 1

    _current_step = "done"
    try:
        await done()
    except Exception as err:
        _report_failure("done", describe(err))
        return 1
    _emit({"step": "done", "ok": True})
    return 0


def main(argv):
    if len(argv) != 2:
        _report_failure("startup", f"usage: {argv[0]} <client.config.json>")
        return 1
    try:
        with open(argv[1], encoding="utf-8") as f:
            config = json.load(f)
        check(isinstance(config, dict) and isinstance(config.get("volt"), dict)
              and isinstance(config["volt"].get("id"), str),
              "the configuration has no volt.id")
    except (OSError, ValueError, StepFailed) as err:
        _report_failure("startup", f"cannot use the configuration {argv[1]}: {describe(err)}")
        return 1

    timer = threading.Timer(OVERALL_S, _watchdog)
    timer.daemon = True
    timer.start()
    try:
        # Q3: whatever the client prints goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return asyncio.run(scenario(config))
    except Exception as err:
        _report_failure(_current_step, f"unexpected: {describe(err)}")
        return 1
    finally:
        timer.cancel()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
