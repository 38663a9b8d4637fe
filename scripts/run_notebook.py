"""Execute a notebook headless on a real kernel (nbclient), in its own folder; write the executed
copy to artifacts/ and print its path. Exit non-zero, naming the failing cell, when a cell fails."""
import argparse
import os
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebook")
    ap.add_argument("--out", help="where to write the executed copy (default artifacts/NAME)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    path = os.path.abspath(args.notebook)
    out = os.path.abspath(args.out or os.path.join(
        here, "artifacts", os.path.basename(path).replace(".ipynb", ".executed.ipynb")))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}})
    try:
        client.execute(env=dict(os.environ, JPY_SESSION_NAME=path))
    except CellExecutionError as exc:
        nbformat.write(nb, out)
        print(f"{args.notebook}: a cell failed; executed copy with the error: {out}\n{exc}",
              file=sys.stderr)
        return 1
    nbformat.write(nb, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
