#!/usr/bin/env python3
"""The side-by-side benchmark: tdx-volt and its peers against volt-emulator.

    cargo bench --features legacy --bench peers      # builds ours, then runs this
    python3 scripts/bench-peers.py [--seconds S] [--rounds R] [--quick] [--readme]

Starts one volt-emulator (release build) per protocol: a protocol-v1 Volt (websocket gateway
and gRPC) and an RSA-era Volt (the older JSON gateway). Then, in R interleaved rounds (each
round runs every client once per workload, in a rotated order), runs each client's driver
(interop/bench/README.md) in its own process on the same workload, and prints one table of
figures and ratios (the median of the rounds), the issue's targets with what was measured,
and writes target/bench-peers/{results.json,table.md,chart.svg}. With --readme the table and
chart replace the README's performance section (between its bench-peers markers) and
docs/bench-peers.svg.

The peers are installed as the interop tests install them: `npm ci --prefix interop`, the
venv interop/python/.venv from interop/python/requirements.txt, and the vendor crate's
driver from interop/bench/vendor-rs (its own Cargo.lock). A peer that cannot be installed or
run is reported as missing; the run goes on without it.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench-peers"
SQL_ROWS = 20_000
IDLE_SUBSCRIPTIONS = 10_000
SAVE_BURST = 1_000
# Seconds a driver may take beyond its window (connecting, warming up, closing).
SLACK = 60


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(command, **kwargs):
    log("$ " + " ".join(str(c) for c in command))
    return subprocess.run(command, check=True, **kwargs)


# ---------------------------------------------------------------- building and installing


def cargo_executable(args, name):
    """Builds with `cargo <args> --message-format=json`; the path of executable `name`."""
    out = subprocess.run(
        ["cargo", *args, "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    path = None
    for line in out.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == name:
            path = message["executable"]
    if path is None:
        raise RuntimeError(f"cargo {' '.join(args)} built no executable {name}")
    return Path(path)


VENDOR_CRATE = "volt-client-rs-0.1.12"
# The line the patch follows, and the line it adds (interop/bench/vendor-rs/PATCH.md).
VENDOR_ANCHOR = "while let Some(req) = receive_channel.recv().await {"
VENDOR_ADDED = "                if Vec::is_empty(&req) { continue; } // bench patch: no empty frames"


def patch_vendor_crate(target):
    """Unpacks the vendor crate from cargo's download cache (fetching it first) into
    `target`, adds the one line, and returns the patched copy's directory."""
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(home.glob(f"registry/cache/*/{VENDOR_CRATE}.crate"))
    if not found:
        # Downloaded through a throwaway package, so that the driver's lock file (made with
        # the patch) stays as it is.
        with tempfile.TemporaryDirectory() as scratch:
            name, version = VENDOR_CRATE.rsplit("-", 1)
            (Path(scratch) / "src").mkdir()
            (Path(scratch) / "src" / "lib.rs").write_text("")
            (Path(scratch) / "Cargo.toml").write_text(
                f'[package]\nname = "fetch-only"\nversion = "0.0.0"\nedition = "2021"\n'
                f'[dependencies]\n{name} = "={version}"\n')
            run(["cargo", "fetch", "--manifest-path", str(Path(scratch) / "Cargo.toml")])
        found = sorted(home.glob(f"registry/cache/*/{VENDOR_CRATE}.crate"))
    if not found:
        raise RuntimeError(f"{VENDOR_CRATE}.crate is not in {home}/registry/cache")
    destination = target / "volt-client-rs"
    shutil.rmtree(destination, ignore_errors=True)
    with tarfile.open(found[0]) as archive, tempfile.TemporaryDirectory() as unpacked:
        archive.extractall(unpacked, filter="data")
        shutil.move(str(Path(unpacked) / VENDOR_CRATE), str(destination))
    source = destination / "src" / "volt_client.rs"
    lines = source.read_text().split("\n")
    anchors = [i for i, line in enumerate(lines) if line.strip() == VENDOR_ANCHOR]
    if len(anchors) != 1:
        raise RuntimeError(f"the patch's anchor is not once in {source}")
    lines.insert(anchors[0] + 1, VENDOR_ADDED)
    source.write_text("\n".join(lines))
    return destination


def install_peers(skip):
    """The peers' drivers, as {client: command prefix}; a missing one is left out."""
    peers = {}
    node = ROOT / "interop" / "node_modules"
    venv_python = ROOT / "interop" / "python" / ".venv" / "bin" / "python"
    if not skip:
        try:
            run(["npm", "ci", "--prefix", "interop", "--no-audit", "--no-fund",
                 "--loglevel=error"], cwd=ROOT)
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"the JS clients cannot be installed: {e}")
        if not venv_python.exists():
            try:
                run(["python3", "-m", "venv", "interop/python/.venv"], cwd=ROOT)
                run([str(venv_python), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", "--require-hashes", "-r",
                     "interop/python/requirements.txt"], cwd=ROOT)
            except (OSError, subprocess.CalledProcessError) as e:
                log(f"the Python client cannot be installed: {e}")
    if node.exists():
        peers["js-web"] = ["node", str(ROOT / "interop" / "bench" / "web.mjs")]
        peers["js-grpc"] = ["node", str(ROOT / "interop" / "bench" / "grpc.mjs")]
    if venv_python.exists():
        peers["py-legacy"] = [str(venv_python), str(ROOT / "interop" / "bench" / "legacy.py")]
    vendor = ROOT / "interop" / "bench" / "vendor-rs"
    if (vendor / "Cargo.toml").exists():
        target = ROOT / "target" / "bench-vendor-rs"
        try:
            patched = patch_vendor_crate(target)
            run(["cargo", "build", "--release", "--locked", "--manifest-path",
                 str(vendor / "Cargo.toml"), "--config",
                 f'patch.crates-io.volt-client-rs.path="{patched}"'],
                cwd=ROOT, env={**os.environ, "CARGO_TARGET_DIR": str(target)})
            peers["vendor-rs"] = [str(target / "release" / "vendor-rs-driver")]
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            log(f"the vendor's Rust client cannot be built: {e}")
    return {name: cmd for name, cmd in peers.items() if Path(cmd[-1]).exists()}


# ---------------------------------------------------------------- emulators


class Emulator:
    """A volt-emulator process serving a fresh directory."""

    def __init__(self, binary, directory, legacy):
        command = [str(binary), "serve", "--dir", str(directory)]
        if legacy:
            command.append("--legacy")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{binary} did not start")
        self.addresses = json.loads(line)
        self.config = directory / "client.config.json"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------- the runs


def drive(command, seconds, extra):
    """One driver run; its JSON line, or None when it failed or does not support it."""
    full = [*command, "--seconds", str(seconds), *extra]
    try:
        done = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=seconds + SLACK, cwd=ROOT)
    except subprocess.TimeoutExpired:
        log(f"timed out: {' '.join(full)}")
        return None
    if done.returncode != 0:
        log(f"failed ({done.returncode}): {' '.join(full)}\n{done.stderr.strip()[-2000:]}")
        return None
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        log(f"no JSON line from: {' '.join(full)}\n{done.stdout[-500:]}")
        return None
    if "unsupported" in result:
        log(f"unsupported: {' '.join(full)}: {result['unsupported']}")
        return None
    return result


def plan(ours, peers, v1, legacy, resources):
    """[(workload key, label, [(client label, command, extra args)])] for one round."""
    v1_res, legacy_res = resources
    ours_ws = (["tdx-volt websocket", [str(ours), "--transport", "websocket",
                                       "--config", str(v1.config)]])
    ours_grpc = (["tdx-volt grpc", [str(ours), "--transport", "grpc",
                                    "--config", str(v1.config)]])
    ours_legacy = (["tdx-volt legacy", [str(ours), "--transport", "legacy",
                                        "--config", str(legacy.config)]])
    v1_peers = [(f"{name} {kind}", [*peers[name], "--config", str(v1.config)])
                for name, kind in (("js-web", "websocket"), ("vendor-rs", "websocket"),
                                   ("js-grpc", "grpc")) if name in peers]
    legacy_peers = [("py-legacy legacy", [*peers["py-legacy"], "--config", str(legacy.config)])
                    ] if "py-legacy" in peers else []
    v1_clients = [ours_ws, ours_grpc, *v1_peers]
    legacy_clients = [ours_legacy, *legacy_peers]

    def both(extra_v1, extra_legacy):
        return ([(label, cmd, extra_v1) for label, cmd in v1_clients]
                + [(label, cmd, extra_legacy) for label, cmd in legacy_clients])

    steps = []
    for inflight in (1, 16, 256):
        extra = ["--workload", "unary", "--inflight", str(inflight)]
        steps.append((f"unary/{inflight}", f"unary, {inflight} in flight (calls/s)",
                      both(extra, extra)))
    for chunk in (1024, 65536):
        steps.append((f"wire/{chunk}", f"wire, {chunk // 1024} KiB chunks (MB/s)",
                      both(["--workload", "wire", "--chunk", str(chunk), "--wire", v1_res["wire"]],
                           ["--workload", "wire", "--chunk", str(chunk), "--wire",
                            legacy_res["wire"]])))
    steps.append(("sql", f"SQL, {SQL_ROWS:,}-row result (rows/s)",
                  both(["--workload", "sql", "--database", v1_res["database"]],
                       ["--workload", "sql", "--database", legacy_res["database"]])))
    return steps


def rate(result, key):
    """The figure a workload is judged by, per second of wall time."""
    seconds = result["seconds"] or 1e-9
    if key.startswith("wire"):
        return result["bytes"] / seconds / 1e6
    if key == "sql":
        return result["rows"] / seconds
    return result["ops"] / seconds


def cpu_per_op_us(result, key):
    """Client CPU (user + system) per call, per MB (wire) or per row (sql), in microseconds."""
    cpu = result["cpu_user_s"] + result["cpu_sys_s"]
    if key.startswith("wire"):
        units = result["bytes"] / 1e6
    elif key == "sql":
        units = result["rows"]
    else:
        units = result["ops"]
    return cpu * 1e6 / units if units else float("nan")


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- the report


def fmt(value):
    if value != value:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(summary, labels):
    """The markdown table: per workload, each client's figure, CPU and ratios to ours."""
    lines = ["| workload | client | transport | figure | client CPU per unit (us) "
             "| tdx-volt x (figure) | tdx-volt x (CPU) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for key, label in labels:
        rows = summary.get(key, {})
        for client, figures in rows.items():
            name, transport = client.split(" ", 1)
            ours = rows.get(f"tdx-volt {transport}")
            if name != "tdx-volt" and ours:
                speed = f"{ours['rate'] / figures['rate']:.2f}" if figures["rate"] else "-"
                cpu = f"{ours['cpu'] / figures['cpu']:.2f}" if figures["cpu"] else "-"
            else:
                speed = cpu = ""
            lines.append(f"| {label} | {name} | {transport} | {fmt(figures['rate'])} "
                         f"| {fmt(figures['cpu'])} | {speed} | {cpu} |")
    return "\n".join(lines)


def targets(summary, extras):
    """The issue's done-when figures: [(what, target, measured, met)]."""
    get = lambda key, client, what: summary.get(key, {}).get(client, {}).get(what, float("nan"))
    out = []
    floor = extras.get("floor_us", float("nan"))
    ws_cpu = get("unary/1", "tdx-volt websocket", "cpu")
    out.append(("websocket unary CPU per call / crypto floor", "<= 1.5",
                ws_cpu / floor, ws_cpu / floor <= 1.5))
    for inflight in (1, 16, 256):
        key = f"unary/{inflight}"
        vendor = get(key, "vendor-rs websocket", "rate")
        ours = get(key, "tdx-volt websocket", "rate")
        out.append((f"websocket calls/s vs vendor-rs, {inflight} in flight", ">= 2",
                    ours / vendor, ours / vendor >= 2))
        cpu = get(key, "tdx-volt websocket", "cpu") / get(key, "vendor-rs websocket", "cpu")
        out.append((f"websocket CPU per call vs vendor-rs, {inflight} in flight", "<= 0.5",
                    cpu, cpu <= 0.5))
    grpc_cpu = get("unary/1", "tdx-volt grpc", "cpu")
    out.append(("gRPC unary CPU per call (us)", "<= 100", grpc_cpu, grpc_cpu <= 100))
    rows = get("sql", "tdx-volt grpc", "rate")
    out.append(("SQL typed rows/s over gRPC", ">= 500,000", rows, rows >= 500_000))
    js = get("sql", "js-grpc grpc", "rate")
    out.append(("SQL rows/s vs js-grpc", ">= 3", rows / js, rows / js >= 3))
    grpc_wire = get("wire/65536", "tdx-volt grpc", "rate")
    out.append(("wire 64 KiB over gRPC (MB/s)", ">= 300", grpc_wire, grpc_wire >= 300))
    ws_wire = get("wire/65536", "tdx-volt websocket", "rate")
    out.append(("wire 64 KiB over the TLS gateway (MB/s)", ">= 150", ws_wire, ws_wire >= 150))
    for inflight in (1, 16, 256):
        key = f"unary/{inflight}"
        speed = get(key, "tdx-volt legacy", "rate") / get(key, "py-legacy legacy", "rate")
        cpu = get(key, "tdx-volt legacy", "cpu") / get(key, "py-legacy legacy", "cpu")
        out.append((f"older protocol calls/s vs Python, {inflight} in flight", ">= 2",
                    speed, speed >= 2))
        out.append((f"older protocol CPU per call vs Python, {inflight} in flight", "<= 0.5",
                    cpu, cpu <= 0.5))
    for transport in ("websocket", "grpc"):
        per = extras.get(f"idle_{transport}", float("nan"))
        out.append((f"RSS per idle subscription, {transport} (bytes)", "<= 4,096", per,
                    per <= 4096))
    save = extras.get("save_seconds", float("nan"))
    out.append((f"emulator: {SAVE_BURST:,} concurrent SaveResource (s)", "< 2", save, save < 2))
    return out


def targets_table(rows):
    lines = ["| target | wanted | measured | met |", "|---|---:|---:|:---:|"]
    for what, wanted, measured, met in rows:
        lines.append(f"| {what} | {wanted} | {fmt(measured)} | "
                     f"{'yes' if met else ('-' if measured != measured else 'no')} |")
    return "\n".join(lines)


COLOURS = {"tdx-volt": "#d9480f", "js-web": "#1c7ed6", "js-grpc": "#1971c2",
           "vendor-rs": "#5f3dc4", "py-legacy": "#2b8a3e"}


def chart(summary, labels):
    """An SVG of horizontal bars: each client's figure per workload, as a share of the best."""
    bar, gap, left, width = 16, 10, 330, 420
    rows = []
    for key, label in labels:
        group = summary.get(key, {})
        best = max((f["rate"] for f in group.values() if f["rate"] == f["rate"]), default=0)
        if not best:
            continue
        rows.append(("title", label, None, None))
        for client, figures in group.items():
            rows.append(("bar", client, figures["rate"] / best, figures["rate"]))
    height = sum(bar + 4 if kind == "bar" else 22 for kind, *_ in rows) + gap * 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    y = gap
    for kind, text, share, value in rows:
        if kind == "title":
            y += 16
            out.append(f'<text x="4" y="{y}" font-weight="bold">{text}</text>')
            y += 6
            continue
        colour = COLOURS.get(text.split(" ")[0], "#868e96")
        out.append(f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{text}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{max(share * width, 1):.1f}" '
                   f'height="{bar}" fill="{colour}"/>')
        out.append(f'<text x="{left + share * width + 4:.1f}" y="{y + bar - 4}">'
                   f'{fmt(value)}</text>')
        y += bar + 4
    out.append("</svg>")
    return "\n".join(out) + "\n"


def update_readme(report, svg):
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "bench-peers.svg").write_text(svg)
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"
    if begin not in text or end not in text:
        log("README.md has no bench-peers markers; not updated")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{report}\n{end}{tail}")


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", type=Path, help="tdx-volt's driver (benches/peers.rs)")
    parser.add_argument("--emulator", type=Path, help="a volt-emulator binary")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="1 s windows, one round")
    parser.add_argument("--skip-install", action="store_true",
                        help="use the peers already installed")
    parser.add_argument("--readme", action="store_true",
                        help="write the table and chart into README.md and docs/")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1.0, 1

    ours = args.ours or cargo_executable(
        ["bench", "--features", "legacy", "--bench", "peers", "--no-run"], "peers")
    emulator = args.emulator or cargo_executable(
        ["build", "--release", "-p", "tdx-volt-emulator", "--bin", "volt-emulator"],
        "volt-emulator")
    peers = install_peers(args.skip_install)
    log(f"peers: {', '.join(sorted(peers)) or 'none'}")

    work = Path(tempfile.mkdtemp(prefix="volt-bench-peers-"))
    v1 = Emulator(emulator, work / "v1", legacy=False)
    legacy = Emulator(emulator, work / "legacy", legacy=True)
    results = []
    extras = {}
    try:
        resources = []
        for emu, transport in ((v1, "grpc"), (legacy, "legacy")):
            done = run([str(ours), "setup", "--config", str(emu.config), "--transport",
                        transport], stdout=subprocess.PIPE, text=True)
            resources.append(json.loads(done.stdout.strip().splitlines()[-1]))
        floor = drive([str(ours), "floor"], args.seconds, [])
        extras["floor_us"] = floor["per_call_us"] if floor else float("nan")
        steps = plan(ours, peers, v1, legacy, resources)
        for round_number in range(args.rounds):
            for key, label, clients in steps:
                # Interleaved: each round starts the clients at a different place.
                shift = round_number % len(clients)
                for client, command, extra in clients[shift:] + clients[:shift]:
                    log(f"round {round_number + 1}: {label}: {client}")
                    result = drive(command, args.seconds, extra)
                    if result:
                        results.append({**result, "key": key, "client": client,
                                        "round": round_number})
        for transport in ("websocket", "grpc"):
            idle = drive([str(ours), "--transport", transport, "--config", str(v1.config),
                          "--workload", "idle", "--inflight", str(IDLE_SUBSCRIPTIONS),
                          "--wire", resources[0]["wire"]], args.seconds, [])
            if idle:
                extras[f"idle_{transport}"] = idle["bytes"] / max(idle["ops"], 1)
        save = drive([str(ours), "--transport", "grpc", "--config", str(v1.config),
                      "--workload", "save", "--inflight", str(SAVE_BURST)], args.seconds, [])
        if save:
            extras["save_seconds"] = save["seconds"]
    finally:
        v1.stop()
        legacy.stop()
        shutil.rmtree(work, ignore_errors=True)

    labels = [(key, label) for key, label, _ in steps]
    summary = {}
    for key, _ in labels:
        for client in dict.fromkeys(r["client"] for r in results if r["key"] == key):
            runs = [r for r in results if r["key"] == key and r["client"] == client]
            summary.setdefault(key, {})[client] = {
                "rate": median([rate(r, key) for r in runs]),
                "cpu": median([cpu_per_op_us(r, key) for r in runs]),
            }
    machine = f"{os.cpu_count()} cores, {args.rounds} rounds of {args.seconds:g} s"
    report = "\n\n".join([
        f"Measured by `scripts/bench-peers.py` on {time.strftime('%Y-%m-%d')} ({machine}); "
        "figures are medians of the rounds. CPU per unit is per call (unary), per MB (wire) "
        "or per row (SQL). The ratios are tdx-volt's figure over the peer's on the same "
        "transport.",
        table(summary, labels),
        f"Crypto floor of a protocol-v1 call (the same primitives in a loop): "
        f"{fmt(extras.get('floor_us', float('nan')))} us.",
        targets_table(targets(summary, extras)),
        "![tdx-volt and its peers](https://raw.githubusercontent.com/tdx-volt/tdx-volt/main/"
        "docs/bench-peers.svg)",
    ])
    svg = chart(summary, labels)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(
        {"results": results, "summary": summary, "extras": extras}, indent=1))
    (OUT / "table.md").write_text(report + "\n")
    (OUT / "chart.svg").write_text(svg)
    print(report)
    if args.readme:
        update_readme(report, svg)


if __name__ == "__main__":
    main()
