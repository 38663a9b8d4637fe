"""The panel in a real browser: JupyterLab on 127.0.0.1, headless Debian Chromium driven by
Playwright, notebooks/panel.ipynb run with Run All, the demo job stopped with its row's button.

Needs what scripts/setup.sh installs (Debian `chromium`, jupyterlab and playwright from the test
extras); installs nothing itself. The server gets a token, a free port and temporary runtime,
config, data and settings folders; it serves a temporary copy of the notebook, so autosave never
touches the repository. A screenshot of the panel goes to artifacts/panel.png.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from conftest import remove_labelled

pytestmark = [pytest.mark.browser, pytest.mark.engine]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO = "dockmagic.demo=panel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server serving a copy of notebooks/panel.ipynb; stopped (with its kernels)
    whatever happens."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: run scripts/setup.sh as root (apt-get install chromium)")
    pytest.importorskip("jupyterlab", reason="pip install -e .[test]")
    root, home = tmp_path / "root", tmp_path / "home"
    dirs = {name: tmp_path / name for name in ("runtime", "config", "data", "settings",
                                                "workspaces", "ipython")}
    for d in [root, home, *dirs.values()]:
        d.mkdir()
    shutil.copy(os.path.join(ROOT, "notebooks", "panel.ipynb"), root / "panel.ipynb")
    # no "official Jupyter news?" toast over the notebook
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # start the notebook's kernel without the "Select Kernel" dialog
    tracker = dirs["settings"] / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True}))
    port, token = free_port(), uuid.uuid4().hex
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               IPYTHONDIR=str(dirs["ipython"]),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={dirs['settings']}",
         f"--LabApp.workspaces_dir={dirs['workspaces']}", "--allow-root"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n"
                                + (tmp_path / "lab.log").read_text(errors="replace")[-3000:])
                time.sleep(0.2)
        yield url, token
    finally:
        proc.send_signal(signal.SIGINT)  # twice: jupyter asks to confirm on the first
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # the kernel too, if the server left it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        # shown by pytest only when the test failed
        print("--- JupyterLab log (tail) ---\n"
              + (tmp_path / "lab.log").read_text(errors="replace")[-4000:])


def test_run_all_shows_the_job_and_its_stop_button_stops_it(lab, docker_client, base_image):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    os.makedirs(os.path.join(ROOT, "artifacts"), exist_ok=True)
    remove_labelled(docker_client, DEMO)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                         headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                page.goto(f"{url}/lab/tree/panel.ipynb?token={token}")
                # Run All only once the kernel is up: clicked earlier, Lab runs nothing
                expect(page.locator(".jp-StatusBar-Widget")).to_contain_text(
                    "Python 3 (ipykernel) | Idle", timeout=60_000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

                deadline = time.monotonic() + 60
                while not (demo := docker_client.containers.list(
                        all=True, filters={"label": DEMO})):
                    assert time.monotonic() < deadline, "the notebook started no container"
                    time.sleep(0.2)
                job = demo[0]
                row = page.locator(".dm-row", has_text=job.name)
                expect(row.locator(".dm-s-running")).to_be_visible(timeout=60_000)
                row.locator("button.dm-act-stop").click()

                deadline = time.monotonic() + 20
                while docker_client.api.inspect_container(job.id)["State"]["Status"] != "exited":
                    assert time.monotonic() < deadline, "the stop button did not stop the job"
                    time.sleep(0.1)
                expect(row.locator(".dm-s-exited")).to_be_visible(timeout=15_000)
                expect(row.locator("button.dm-act-stop")).to_be_disabled()
                page.mouse.move(0, 0)  # no hover highlight in the picture
                page.locator(".dm-panel").screenshot(
                    path=os.path.join(ROOT, "artifacts", "panel.png"))
            except Exception:
                page.screenshot(path=os.path.join(ROOT, "artifacts", "panel-failure.png"))
                raise
            finally:
                browser.close()
    finally:
        remove_labelled(docker_client, DEMO)
