#!/usr/bin/env bash
# Formatting and lint gates that CI enforces: rustfmt, clippy with -D warnings, and Biome for the
# TypeScript. Fails on the first violation. `cargo fmt --all` and `pnpm format` fix formatting.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" \
    || { echo "lint: the rustup component '$c' is missing (rustup component add $c)" >&2; exit 1; }
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
pnpm lint
