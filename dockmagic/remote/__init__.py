"""Remote engines: Docker engines on other hosts, reached over SSH (or tcp://), with the notebook
folder synced.

Which file owns what:

| file | owns | pure? |
|---|---|---|
| `errors.py` | the one-line errors that name the engine and the fix (unreachable, auth, rsync, ...) | yes |
| `urls.py` | engine URLs (`ssh://[user@]host[:port]`, `tcp://host:port`, `unix://`) -> `Endpoint` | yes |
| `store.py` | the engines saved under the XDG config folder (`engines.toml`), docker CLI contexts | file I/O |
| `sshlink.py` | one persistent OpenSSH connection per engine (ControlMaster) forwarding the remote Docker socket to a private local unix socket; remote commands and rsync over it; reconnects | I/O |
| `filters.py` | `.dockerignore` / `.gitignore` -> rsync filter rules | yes |
| `workspace.py` | the per-notebook workspace on the remote host: push before a cell, pull after (conflicts kept both ways), change-only sync for sessions; rsync over SSH as its transport | I/O |
| `volume.py` | the workspace of a tcp:// engine (no SSH): a named volume per notebook folder, filled and read with tar through the engine API via helper containers; `Workspace`'s decisions, another transport | I/O |
| `tarfiles.py` | the folder as tar chunks out; untrusted tar in (data filter, names asked for only, no symlink followed on the way); the helper's listing script | file I/O |
| `nvsmi.py` | `nvidia-smi -q -x` output -> the same GPU snapshot `%gpus` renders | yes |
| `placement.py` | a `RunSpec`'s binds from the notebook folder moved into the workspace (same target), or made its volume (tcp://) | yes |
| `auto.py` | `--engine auto --gpus auto:N`: the engine and GPUs with the most free memory | choice pure |
| `engines.py` | named engines as `Engine`s; `RemoteEngine` (the link, the workspace, the SSH user, reconnect-and-retry of idempotent calls, refusals naming the engine) | I/O |
| `cells.py` | the folder synced around one-shot cells, change-only around session cells | I/O |
| `table.py` | `%docker engines` rows (each engine probed on its own thread), remote GPU snapshots (also the panel's, see `dockmagic/panelpoll.py`) | I/O + pure rendering |
| `command.py` | `%docker engines [add|rm]` | thin |
| `hostreaper.py` | this kernel's reaper on the engine's host, over the engine's SSH connection: paths translated there, pings, restarted after a reconnect (the old one hands over) | I/O |
| `lookup.py` | which engine runs session NAME (`%%docker @NAME` after a restart) | I/O |

Nothing here imports docker, requests or urllib3: the Docker API is reached through
`dockmagic.engine`'s `Engine`, made from the local socket `sshlink` forwards.
"""
