"""Real Jupyter kernels (jupyter_client + ipykernel), for tests that kill, interrupt or share
them."""
import os
import queue
import signal
import time

from jupyter_client import KernelManager


class CellResult:
    def __init__(self):
        self.stdout, self.stderr, self.error, self.status = "", "", None, None

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self):
        return (f"CellResult(status={self.status!r}, stdout={self.stdout[-500:]!r}, "
                f"stderr={self.stderr[-1500:]!r}, error={self.error!r})")


class Kernel:
    """One ipykernel process with dockmagic loaded, driven over its channels."""

    def __init__(self, cwd=None, env=None, load=True):
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd) if cwd else None, env={**os.environ, **(env or {})},
                             independent=False)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.pid = int(self.run("import os; print(os.getpid())").stdout)
        self.kernel_id = self.run("from dockmagic.kernel import kernel_id; print(kernel_id())",
                                  check=True).stdout.strip()
        if load:
            self.run("%load_ext dockmagic", check=True)

    # one cell
    def send(self, code: str) -> str:
        return self.kc.execute(code, store_history=True, allow_stdin=False)

    def collect(self, msg_id: str, timeout: float = 300, until=None) -> CellResult:
        """Output of MSG_ID until the kernel is idle again (or ``until(result)`` holds)."""
        res = CellResult()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish within {timeout:g} s: {res!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    res.stdout += content["text"]
                else:
                    res.stderr += content["text"]
            elif kind == "error":
                res.error = content
            elif kind in ("execute_result", "display_data"):
                res.stdout += content.get("data", {}).get("text/plain", "") + "\n"
            elif kind == "status" and content["execution_state"] == "idle":
                res.status = "error" if res.error else "ok"
                return res
            if until is not None and until(res):
                return res

    def run(self, code: str, timeout: float = 300, check: bool = False) -> CellResult:
        res = self.collect(self.send(code), timeout)
        if check and res.error:
            raise AssertionError(f"cell failed: {code[:200]!r}: {res!r}")
        return res

    # death
    def kill(self):
        """SIGKILL the kernel and its whole process group (when it leads one), as an OOM kill or
        `kill -9 -PGID` would: nothing of the kernel gets to clean up."""
        try:
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self):
        try:
            self.kc.stop_channels()
        finally:
            try:
                self.km.shutdown_kernel(now=True)
            except Exception:
                pass
