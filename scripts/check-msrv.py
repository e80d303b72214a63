#!/usr/bin/env python3
"""Checks each workspace crate's declared MSRV (`rust-version`) against its dependencies.

Only one toolchain is at hand, so the MSRV cannot be checked by building with it. What can be
checked: no crate in the resolved graph that a workspace crate builds with (normal and build
dependencies, every feature on, every target platform) declares a `rust-version` above that
crate's own. Dev-dependencies are left out: they build the tests, not what users build.
(clippy's `incompatible_msrv` lint checks the other half: our own use of newer std APIs.)

Usage: scripts/check-msrv.py   (from anywhere in the workspace; exits 1 on a violation)
"""

import json
import subprocess
import sys


def parse(version):
    """'1.85' or '1.85.1' as a comparable tuple."""
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    failures = []
    for member in metadata["workspace_members"]:
        crate = packages[member]
        own = crate.get("rust_version")
        if own is None:
            failures.append(f"{crate['name']}: declares no rust-version")
            continue
        seen = set()
        stack = [member]
        while stack:
            node = nodes[stack.pop()]
            for dep in node["deps"]:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                # Dev-dependencies build tests, not what users build.
                if kinds <= {"dev"} or dep["pkg"] in seen:
                    continue
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
        worst = []
        for pkg_id in seen:
            dep = packages[pkg_id]
            needs = dep.get("rust_version")
            if needs and parse(needs) > parse(own):
                worst.append(f"{dep['name']} {dep['version']} needs {needs}")
        if worst:
            failures.append(
                f"{crate['name']} declares rust-version {own}, but builds with: "
                + ", ".join(sorted(worst))
            )
        else:
            print(f"{crate['name']}: rust-version {own} covers its {len(seen)} dependencies")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
