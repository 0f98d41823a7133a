#!/usr/bin/env bash
# The demo: ingest and query vectors, SIGKILL a writer mid-stream, recover, verify.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh >&2
node packages/cairn/dist/cli.js demo "$@"
