#!/usr/bin/env bash
# From a fresh Debian machine to vind: host packages, a running Docker engine, the CLI, the node image.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/host-deps.sh
bash scripts/dockerd.sh start >/dev/null
npm ci --no-audit --no-fund --loglevel=error
npm run build
node dist/cli/main.js image build
