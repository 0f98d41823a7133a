#!/usr/bin/env bash
# The whole test suite: Rust engine tests (fault injection, recall) and the vitest suite
# (crash tests with SIGKILL, model tests, corruption, bad input).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo test -p cairn-core
pnpm test
