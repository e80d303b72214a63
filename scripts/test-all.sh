#!/usr/bin/env bash
# Runs every check of tdx-volt: formatting, lints, and all tests (unit, property, doc,
# known-answer vectors from the official client, and the comparison of proto/ with the
# published API definitions).
#
# It first installs the official JavaScript clients pinned in interop/package-lock.json and
# the official Python client pinned (with hashes) in interop/python/requirements.txt, into
# the virtual environment interop/python/.venv (test-time peers only; node_modules and the
# venv are never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== npm ci (interop peers)"
npm ci --prefix interop --no-audit --no-fund --loglevel=error

echo "== python venv (interop peers)"
python3 -m venv --clear interop/python/.venv
# Dependencies are not turned off (no --no-deps): with --require-hashes pip then also
# checks that the pinned set is complete.
interop/python/.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  --require-hashes -r interop/python/requirements.txt

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== import layers and file sizes"
# No import cycles, and each layer imports only those below it (README, Layout).
python3 scripts/import-layers.py src --depth=1 --depth=2 \
  transport:client protocol:client protocol:transport
python3 scripts/import-layers.py emulator/src --depth=1 --depth=2
python3 scripts/import-layers.py cli/src --depth=1 --depth=2
# No source file over 700 lines (tests and generated code aside), unless its first lines say
# why ("over 700 lines because ...").
big=$(find src emulator/src cli/src -name '*.rs' ! -name tests.rs \
  -exec awk 'FNR <= 5 && /over 700 lines because/ { next_file = 1 }
             END { if (NR > 700 && !next_file) print FILENAME ": " NR " lines" }' {} \;)
if [ -n "$big" ]; then
  echo "$big" >&2
  echo "source files over 700 lines: split them, or say why in their first lines" >&2
  exit 1
fi

echo "== feature sets (each builds alone)"
# The crate's features (Cargo.toml, README "Features") in the combinations users pick; `cargo
# check` only, the tests run below with the defaults. --all-targets checks that the tests and
# examples needing a transport declare it (required-features).
for features in "" grpc websocket websocket,legacy grpc,sync legacy client; do
  echo "-- tdx-volt --no-default-features --features '$features'"
  cargo check -p tdx-volt --no-default-features --features "$features" --locked --quiet
done
cargo check -p tdx-volt --no-default-features --features grpc --all-targets --locked --quiet
cargo check -p tdx-volt --all-features --all-targets --locked --quiet
# The RSA-era protocol's aws-lc-rs (AWS-LC, built from C) stays out of builds that do not ask
# for `legacy`.
if cargo tree -p tdx-volt --no-default-features --features grpc,websocket,sync -e normal --locked \
  | grep -E ' aws-lc-(rs|sys) v'; then
  echo "aws-lc-rs is built without the feature legacy" >&2
  exit 1
fi

echo "== MSRV (declared rust-version against every dependency's)"
python3 scripts/check-msrv.py

echo "== packages (cargo package)"
# All three crates packaged together (cargo resolves the unpublished ones from a local
# overlay), so their manifests, include lists and path dependencies' versions are checked.
# Only the root crate's package is also built: verifying a package builds its dependencies
# anew with that crate's own features. Measured on 2 shared cores: the root's 3.5 minutes,
# all three 12.5 minutes and 2.5 GB more of target/; the emulator and CLI packages hold the
# same sources the workspace build compiles anyway. (The warnings about tests, examples and
# benches left out of the packages, and about profile overrides for packages the root crate
# alone does not build, are expected.)
cargo package --workspace --locked --no-verify --quiet
cargo package -p tdx-volt --locked --quiet

echo "== fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet

echo "== benchmark peer drivers parse"
# The side-by-side benchmark's JS and Python drivers (interop/bench) are run only by
# scripts/bench-peers.py; here they are only checked to parse. (The peers bench target itself
# is built by clippy above; the vendor crate's driver is built at bench time.)
for driver in interop/bench/*.mjs interop/bench/lib/*.mjs; do node --check "$driver"; done
python3 -m py_compile interop/bench/legacy.py scripts/bench-peers.py

echo "== cargo test"
cargo test --workspace --locked

echo "== quickstart example"
cargo run --locked --quiet --example quickstart

echo "== disk used by the build"
du -sh target 2>/dev/null || true
