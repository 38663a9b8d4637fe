#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), then run the whole suite on the real engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure-rig.sh   # the "remote GPU server" the remote-engine tests use (#10)
mkdir -p artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
