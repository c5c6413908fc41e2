#!/usr/bin/env bash
# From a fresh Debian machine to a running cluster: host packages, a Docker engine, the vind CLI
# (linked onto PATH as `vind`), the node image, and `vind create` with the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/host-deps.sh
bash scripts/dockerd.sh start >/dev/null
npm ci --no-audit --no-fund --loglevel=error
npm run build
npm link --no-audit --no-fund --loglevel=error >/dev/null
vind image build
vind create "$@"
