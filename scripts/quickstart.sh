#!/usr/bin/env bash
# The main job: run notebooks/quickstart.ipynb headless on the local engine, print where the
# executed copy is.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKMAGIC_BROWSER=0 bash scripts/setup.sh >&2
exec .venv/bin/python scripts/run_notebook.py notebooks/quickstart.ipynb "$@"
