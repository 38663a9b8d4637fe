"""Loading the extension is cheap and touches nothing: no engine, no NVML, no widgets."""
import subprocess
import sys


def test_load_imports_neither_docker_nor_pynvml_nor_ipywidgets():
    script = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'dockmagic')\n"
        "assert ip.find_cell_magic('docker') and ip.find_line_magic('gpus')\n"
        "assert ip.find_cell_magic('dockerfile')\n"
        "print(sorted(m for m in ('docker', 'pynvml', 'ipywidgets') if m in sys.modules))\n"
        "ip.run_line_magic('unload_ext', 'dockmagic')\n"
        "assert ip.find_cell_magic('docker') is None\n"
        "ip.run_line_magic('load_ext', 'dockmagic')\n"
        "assert ip.find_cell_magic('docker')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin",
                                            "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
