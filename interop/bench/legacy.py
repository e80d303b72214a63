#!/usr/bin/env python3
"""legacy.py - benchmark driver for the official Python client, PyPI volt_client_web 0.1.14
(the older protocol: JSON text frames over the websocket gateway, RSA keys, a per-call AES key
in the identity token). Runs with interop/python/.venv/bin/python.

    legacy.py --config FILE --workload unary|wire|sql --seconds S
              [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]

Command line, workloads and the one JSON line printed: interop/bench/README.md. Each workload
warms up for WARM_UP_S, then runs for --seconds; unary and sql finish the calls already
started when the window closes (the window lasts until they are answered), wire counts what
arrived when the window closes.

The client is asyncio-based and may have many calls open on its one socket, so --inflight N
runs N asyncio tasks. Every open call runs its own receive loop on the shared socket; the
loops take turns (the one holding recv() reads frames for every call, the others sleep the
client's `receive_delay`, left at its default of 0.1 s). The client prints diagnostics with
print(), so stdout is pointed at stderr while it runs and the JSON line goes to the real one.
It opens wss:// with Python's default TLS context, so SSL_CERT_FILE is pointed at a temporary
copy of the Volt CA from the configuration (volt.ca_pem).
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import warnings

CLIENT = "py-legacy"
TRANSPORT = "legacy"
WARM_UP_S = 0.5
# Chunks the wire publisher may be ahead of the subscriber (memory stays bounded).
WIRE_AHEAD = 64
# Real wire chunks are filled with this byte; the probes start with another one.
FILL = 0x5A

OUT = sys.stdout
# A temporary copy of the Volt CA, removed on exit.
CA_FILE = []


class Failure(Exception):
    pass


def remove_ca_file():
    while CA_FILE:
        with contextlib.suppress(OSError):
            os.unlink(CA_FILE.pop())


def die(message):
    remove_ca_file()
    sys.stderr.write(f"{CLIENT}: {message}\n")
    sys.stderr.flush()
    os._exit(1)


# -------------------------------------------------------------------------------------------
# The command line and measuring.
# -------------------------------------------------------------------------------------------

def parse_args(argv):
    def positive(kind):
        def parse(text):
            value = kind(text)
            if not value > 0 or value != value or value == float("inf"):
                raise argparse.ArgumentTypeError(f"needs a positive number, not {text!r}")
            return value
        return parse

    parser = argparse.ArgumentParser(prog="legacy.py")
    parser.add_argument("--config", required=True)
    parser.add_argument("--workload", required=True, choices=["unary", "wire", "sql"])
    parser.add_argument("--seconds", required=True, type=positive(float))
    parser.add_argument("--inflight", type=positive(int), default=1)
    parser.add_argument("--chunk", type=positive(int), default=0)
    parser.add_argument("--wire")
    parser.add_argument("--database")
    # Tolerated when it names this driver's own transport (as ours takes it).
    parser.add_argument("--transport", choices=[TRANSPORT])
    args = parser.parse_args(argv)
    if args.workload == "wire" and not args.wire:
        parser.error("--wire is needed")
    if args.workload == "wire" and not args.chunk:
        args.chunk = 1024
    if args.workload == "sql" and not args.database:
        parser.error("--database is needed")
    return args


def cpu_times():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def measured(body):
    """Runs `body` (returning its counts) and adds its wall time and this process's CPU time."""
    user0, sys0 = cpu_times()
    t0 = time.monotonic()
    counts = await body
    seconds = time.monotonic() - t0
    user1, sys1 = cpu_times()
    return {**counts, "seconds": seconds, "cpu_user_s": user1 - user0, "cpu_sys_s": sys1 - sys0}


# -------------------------------------------------------------------------------------------
# The workloads.
# -------------------------------------------------------------------------------------------

async def unary(client, volt_id, inflight, window):
    """`inflight` tasks of GetResource on the Volt, each starting calls until `window` is over."""
    deadline = time.monotonic() + window
    ops = 0

    async def loop():
        nonlocal ops
        while time.monotonic() < deadline:
            response = await client.GetResource({"resource_id": volt_id})
            if ((response or {}).get("resource") or {}).get("id") != volt_id:
                raise Failure(f"GetResource: {json.dumps(response)[:300]}")
            ops += 1

    await asyncio.gather(*(loop() for _ in range(inflight)))
    return {"ops": ops}


async def sql(client, database_id, window):
    """SELECT * FROM bench, one query after another, rows made dicts by SqlExecuteJSON."""
    deadline = time.monotonic() + window
    ops = rows = 0
    request = {"start": {"database_id": database_id, "statement": "SELECT * FROM bench"}}
    while time.monotonic() < deadline:
        result = await client.SqlExecuteJSON(request)
        if not isinstance(result, list):
            raise Failure(f"SqlExecuteJSON: {result!r}"[:300])
        ops += 1
        rows += len(result)
    return {"ops": ops, "rows": rows}


async def wire(client, wire_id, chunk, warm_up, window):
    """One subscription and one publisher on the wire for the whole run. Probes are published
    until one reaches the subscriber (the subscription registers asynchronously), then a task
    publishes chunks whenever fewer than WIRE_AHEAD are on their way. The warm-up is not
    counted; the window counts the chunks received until it closes."""
    loop = asyncio.get_running_loop()
    payload = base64.b64encode(bytes([FILL]) * chunk).decode()  # bytes travel as base64
    state = {"sent": 0, "received": 0, "probed": False, "counting": False, "ops": 0, "bytes": 0}
    room = asyncio.Event()  # set when the subscriber catches up
    fault = loop.create_future()  # fails the run on any error or end of either call
    over = False

    def failed(what):
        def handler(*err):
            if not over and not fault.done():
                fault.set_exception(Failure(f"{what}: {err[0] if err else 'ended'}"))
        return handler

    def on_chunk(response):
        data = base64.b64decode((response or {}).get("chunk") or "")  # the application's bytes
        if not data:
            return
        if data[0] != FILL:
            state["probed"] = True
            return
        state["received"] += 1
        if state["counting"]:
            state["ops"] += 1
            state["bytes"] += len(data)
        room.set()

    async def guard(awaitable):
        """Awaits `awaitable` unless a call fails first."""
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait({task, fault}, return_when=asyncio.FIRST_COMPLETED)
        if fault.done():
            task.cancel()
            fault.result()
        return task.result()

    sub = await client.SubscribeWire({"wire_id": wire_id})
    sub.on("data", on_chunk)
    sub.on("error", failed("SubscribeWire error"))
    sub.on("end", failed("SubscribeWire ended early"))
    sub_ended = asyncio.Event()
    sub.on("end", sub_ended.set)
    pub = await client.PublishWire({"wire_id": wire_id})
    pub.on("error", failed("PublishWire error"))
    pub.on("end", failed("PublishWire ended early"))

    # Probe every 100 ms until the subscriber is live (at most 10 s).
    probe_deadline = time.monotonic() + 10
    n = 0
    while not state["probed"]:
        if time.monotonic() > probe_deadline:
            raise Failure("no probe reached the subscriber within 10 s")
        n += 1
        await guard(pub.send({"chunk": base64.b64encode(b"probe:%d" % n).decode()}))
        for _ in range(20):
            if state["probed"]:
                break
            await guard(asyncio.sleep(0.005))

    async def publish():
        while not over:
            while state["sent"] - state["received"] >= WIRE_AHEAD and not over:
                room.clear()
                await room.wait()
            if not over:
                await pub.send({"chunk": payload})
                state["sent"] += 1

    publisher = asyncio.create_task(publish())
    publisher.add_done_callback(lambda t: t.cancelled() or failed("publishing")(t.exception()))
    await guard(asyncio.sleep(warm_up))

    async def window_counts():
        state.update(counting=True, ops=0, bytes=0)
        counts = loop.create_future()
        # The counts are taken in the timer callback itself, the moment the window closes.
        loop.call_later(window, lambda: counts.set_result({"ops": state["ops"], "bytes": state["bytes"]}))
        return await guard(counts)

    result = await measured(window_counts())
    # Stop publishing (the publisher finishes the chunk it is sending: a send cancelled
    # half-way would leave the client's call in an unknown state).
    over = True
    room.set()
    await publisher
    await sub.send({"stop": True})
    await pub.end()
    # The subscription's receive loop reads what is still on its way until the subscription
    # ends. If it does not within 1 s, run() aborts the connection.
    try:
        await asyncio.wait_for(sub_ended.wait(), 1)
    except asyncio.TimeoutError:
        sys.stderr.write(f"{CLIENT}: the subscription did not end after stop (its receive loop is stuck)\n")
    return result


# -------------------------------------------------------------------------------------------
# Connecting and running.
# -------------------------------------------------------------------------------------------

def guard_recv():
    """Makes websockets' recv() refuse a second caller every time, as the client expects.

    Every open call of the client runs its own receive loop on the one socket; a loop that
    gets RuntimeError("cannot call recv while another coroutine is already waiting for the
    next message") sleeps and tries again. websockets 11 checks for a second caller by its
    registered waiter, which it clears when a message wakes the first caller, before that
    caller has run again. A second loop can then get in, register its own waiter, and have
    the first caller's clean-up clear it: that loop is never woken. With 16 calls in flight
    against a fast Volt this left a call unanswered in about one run in three (its response
    sat in the socket's queue). Holding a lock for the whole of recv() closes that window;
    the refusal is the same error, so the client behaves as it was written to.
    """
    from websockets.legacy.protocol import WebSocketCommonProtocol

    receive = WebSocketCommonProtocol.recv
    held = asyncio.Lock()

    async def recv(self):
        if held.locked():
            raise RuntimeError(
                "cannot call recv while another coroutine is already waiting for the next message"
            )
        async with held:
            return await receive(self)

    WebSocketCommonProtocol.recv = recv


async def run(args, config):
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from volt_client_web import VoltClient

    guard_recv()

    client = VoltClient(config)
    try:
        await asyncio.wait_for(client.initialise(), 30)
    except Exception as err:
        raise Failure(f"cannot connect: {type(err).__name__}: {err}") from None

    volt_id = config["volt"]["id"]
    if args.workload == "unary":
        await unary(client, volt_id, args.inflight, WARM_UP_S)
        result = await measured(unary(client, volt_id, args.inflight, args.seconds))
    elif args.workload == "sql":
        await sql(client, args.database, WARM_UP_S)
        result = await measured(sql(client, args.database, args.seconds))
    else:
        result = await wire(client, args.wire, args.chunk, WARM_UP_S, args.seconds)

    # The client has no close of its own: stop the calls' receive loops and close the socket,
    # aborting it if the close handshake does not finish within 1 s (nothing reads the socket
    # if a receive loop is stuck, see wire()).
    for rpc in list(client.activeRPCs.values()):
        rpc.receiving_task.cancel()
    closing = asyncio.ensure_future(client.websocket.close())
    if not (await asyncio.wait({closing}, timeout=1))[0]:
        client.websocket.transport.abort()
        # websockets would still wait out its close timeout; asyncio.run cancels the rest.
        closing.cancel()
    return result


def main(argv):
    args = parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as f:
            config = json.load(f)
        volt = config["volt"]
        volt["id"], volt["http_address"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        die(f"cannot use the configuration {args.config}: {type(err).__name__}: {err}")

    # Trust the Volt CA for the client's default TLS context (OpenSSL reads SSL_CERT_FILE
    # when the socket opens; SSL_CERT_DIR, if set, still adds the system CAs).
    if volt.get("ca_pem"):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as ca_file:
            ca_file.write(volt["ca_pem"])
        CA_FILE.append(ca_file.name)
        os.environ["SSL_CERT_FILE"] = ca_file.name

    # Watchdog: the run fails rather than hangs.
    signal.signal(signal.SIGALRM, lambda *_: die(f"timed out after {int(args.seconds) + 15} s (a call never completed)"))
    signal.alarm(int(args.seconds) + 15)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = asyncio.run(run(args, config))
    except Exception as err:
        die(f"{args.workload}: {type(err).__name__}: {err}")
    remove_ca_file()
    line = {
        "client": CLIENT, "transport": TRANSPORT, "workload": args.workload,
        "inflight": args.inflight, "chunk": args.chunk, "ops": result["ops"],
        "bytes": result.get("bytes", 0), "rows": result.get("rows", 0),
        "seconds": result["seconds"], "cpu_user_s": result["cpu_user_s"],
        "cpu_sys_s": result["cpu_sys_s"],
    }
    OUT.write(json.dumps(line) + "\n")
    OUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
