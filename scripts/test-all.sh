#!/usr/bin/env bash
# Runs every check of tdx-volt: formatting, lints, and all tests (unit, property, doc,
# known-answer vectors from the official client, and the comparison of proto/ with the
# published API definitions).
#
# It first installs the official JavaScript clients pinned in interop/package-lock.json
# (test-time peers only; node_modules is never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== npm ci (interop peers)"
npm ci --prefix interop --no-audit --no-fund --loglevel=error

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet

echo "== cargo test"
cargo test --workspace --locked

echo "== quickstart example"
cargo run --locked --quiet --example quickstart
