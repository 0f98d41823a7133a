#!/usr/bin/env bash
# Writes installable tarballs to OUT (napi-rs layout): cairndb-<version>.tgz (the TypeScript API,
# the `cairn` CLI and the generated addon loader) and cairndb-<platform>-<version>.tgz for each
# addon built here (the loader picks it at run time). `npm install OUT/*.tgz` in an app needs
# Node and npm only. Builds first if the build outputs are missing.
set -euo pipefail
out="$(realpath -m "${1:?usage: bash scripts/pack.sh OUT}")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f packages/cairn/dist/index.js || ! -f crates/cairn-node/native.js ]]; then pnpm build; fi
mkdir -p "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
node scripts/pack-stage.mjs "$stage"
for dir in "$stage"/*/; do
  (cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
done
ls "$out"/*.tgz
