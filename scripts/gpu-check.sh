#!/usr/bin/env bash
# Check dockmagic's GPU side on a lent GPU machine (NVML + PyTorch, no Docker engine, no network).
# Prints the rendered snapshot, query_snapshot timing, the auto:1 choice, a snapshot under a short
# torch load, then runs the gpu-marked tests. Installs nothing; finishes in under 90 s.
# Usage: scripts/gpu-check.sh   (PYTHON=/path/to/python to pick the interpreter;
#                                GPU_CHECK_NO_LOAD=1 to skip the torch load)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"   # the repo copy, no pip install needed

# The first interpreter that can import pynvml (PyTorch's venv usually has nvidia-ml-py).
py=""
for cand in "${PYTHON:-}" /opt/torch/.venv/bin/python python3 python; do
  [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
  if "$cand" -c 'import pynvml' >/dev/null 2>&1; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "gpu-check: import pynvml fails with every python tried (\$PYTHON, /opt/torch/.venv/bin/python, python3, python);"
  echo "gpu-check: install nvidia-ml-py there. Showing what dockmagic says without it:"
  py=$(command -v python3 || command -v python)
fi
echo "gpu-check: python $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L | head -n 8
else echo "gpu-check: nvidia-smi not found"; fi

status=0
timeout 55 "$py" scripts/gpu_check.py || status=$?

echo
echo "=== gpu-marked tests"
if "$py" -c 'import pytest' >/dev/null 2>&1; then
  # Other modules' tests may need docker or IPython to import; their collection errors are shown
  # but do not stop the gpu-marked tests from running.
  timeout 25 "$py" -m pytest tests -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
    || status=$((status ? status : $?))
else
  echo "gpu-check: pytest not installed for $py; gpu tests not run"
fi
echo "gpu-check: exit $status"
exit "$status"
