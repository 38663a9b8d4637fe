"""The panel and `%gpus` in a real browser: JupyterLab on 127.0.0.1, headless Debian Chromium
driven by Playwright, notebooks run with Run All as a person would.

Covers: the demo notebook's job stopped with its row's button; the panel's cell column equal
to the cell's prompt number; the logs pane under its row following new output; the panel and
`%gpus` (GPU readings from the recorded 8-GPU fixture) in the dark theme with no hard-coded
light background; the panel at 1024 px with the file browser open (with `%gpus` fitting the
output area, and `%docker --help` and `%gpus auto:2` breaking no word, measured per character);
the short ID at the width a 1400 px window gives; a panel shown again leaving a line saying
where it went; an interrupted `%%docker` cell; a failing `%%docker` cell. Screenshots (light and dark, panel and `%gpus`) go to
artifacts/; with DOCKMAGIC_UPDATE_DOCS_IMG=1 they are also written to docs/img/ for the README.

Needs what scripts/setup.sh installs (Debian `chromium`, jupyterlab and playwright from the test
extras); installs nothing itself. One server per module gets a token, a free port and temporary
runtime, config, data, settings and workspace folders; it serves temporary copies of the
notebooks, so autosave never touches the repository.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
import uuid

import nbformat
import pytest

from conftest import BASE_IMAGE, FIXTURES, remove_labelled

pytestmark = [pytest.mark.browser, pytest.mark.engine]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARTIFACTS = os.path.join(ROOT, "artifacts")
DOCS_IMG = os.path.join(ROOT, "docs", "img")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO = "dockmagic.demo=panel"
VIEW = "dockmagic.test=browser-view"
CELLS = "dockmagic.test=browser-cells"
MIXED = os.path.join(FIXTURES, "nvml-8gpu-mixed.json")
DARK, LIGHT = "JupyterLab Dark", "JupyterLab Light"
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder, plugin, values):
    package, name = plugin.split(":")
    d = folder.joinpath(*package.split("/"))
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server (one per module) serving a temporary folder; stopped (with its
    kernels) whatever happens. Yields (url, token, root folder)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: run scripts/setup.sh as root (apt-get install chromium)")
    pytest.importorskip("jupyterlab", reason="pip install -e .[test]")
    tmp = tmp_path_factory.mktemp("lab")
    root, home = tmp / "root", tmp / "home"
    dirs = {name: tmp / name for name in ("runtime", "config", "data", "settings",
                                          "workspaces", "ipython")}
    for d in [root, home, *dirs.values()]:
        d.mkdir()
    # no "official Jupyter news?" toast over the notebook
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # start a notebook's kernel without the "Select Kernel" dialog; draw every cell (no
    # windowing), so that what the test reads is in the page
    _settings(dirs["settings"], "@jupyterlab/notebook-extension:tracker",
              {"autoStartDefaultKernel": True, "windowingMode": "none"})
    port, token = free_port(), uuid.uuid4().hex
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               IPYTHONDIR=str(dirs["ipython"]),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = tmp / "lab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={dirs['settings']}",
         f"--LabApp.workspaces_dir={dirs['workspaces']}", "--allow-root"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n"
                                + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.2)
        yield url, token, root
    finally:
        proc.send_signal(signal.SIGINT)  # twice: jupyter asks to confirm on the first
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # the kernels too, if the server left them
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        print("--- JupyterLab log (tail) ---\n" + log_path.read_text(errors="replace")[-4000:])


def _api(lab, method, path, body=None):
    url, token, _ = lab
    req = urllib.request.Request(f"{url}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        text = res.read()
    return json.loads(text) if text else None


def set_theme(page, theme):
    """Settings > Theme > ``theme``, as a person picks it; waits until the page has it."""
    from playwright.sync_api import expect

    for attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        page.locator(".lm-Menu-itemLabel", has_text=theme).first.click()
        light = "true" if theme == LIGHT else "false"
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", light,
                                                       timeout=30_000)
        time.sleep(1.5)  # the theme's stylesheet applies
        if not theme_error(page).is_visible():
            return
        # its stylesheet request was dropped (see open_and_run_all): pick the theme again
        print("Lab said 'Error Loading Theme' while switching; switching again")
        theme_error(page).locator("button").last.click()
        other = DARK if theme == LIGHT else LIGHT
        page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        page.locator(".lm-Menu-itemLabel", has_text=other).first.click()
        time.sleep(1.5)
    raise AssertionError(f"Lab could not load the theme {theme}")


def stop_kernels(lab):
    """Shut the kernels down (their panels' refreshers with them) between tests."""
    for session in _api(lab, "GET", "/api/sessions") or []:
        _api(lab, "DELETE", f"/api/sessions/{session['id']}")


def write_notebook(lab, name, cells):
    """A notebook of code cells (markdown for strings starting with "# ") in the server's root."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell(c) if c.startswith("# ")
                else nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(lab[2] / name))
    return name


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def theme_error(page):
    return page.locator(".jp-Dialog", has_text="Error Loading Theme")


def navigate(page, go, tries=3):
    """``go()`` (a goto or reload), again when Chromium reports net::ERR_NETWORK_CHANGED."""
    for attempt in range(tries):
        try:
            return go()
        except Exception as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == tries - 1:
                raise
            print("net::ERR_NETWORK_CHANGED (a container started); loading again")
            time.sleep(1.0)


def open_and_run_all(lab, browser, name, width=1280, height=900):
    """A fresh page (its own workspace) on notebook ``name``, all cells run once the kernel is up."""
    from playwright.sync_api import expect

    url, token, _ = lab
    page = browser.new_page(viewport={"width": width, "height": height},
                            permissions=["clipboard-read", "clipboard-write"])
    workspace = uuid.uuid4().hex[:8]
    navigate(page, lambda: page.goto(f"{url}/lab/workspaces/{workspace}/tree/{name}"
                                     f"?token={token}"))
    # Run All only once the kernel is up: clicked earlier, Lab runs nothing. Chromium drops
    # requests in flight when the host's network changes (each container the engine starts
    # adds an interface: net::ERR_NETWORK_CHANGED); Lab then says its theme stylesheet failed
    # to load. Such a page is loaded again, at most twice.
    idle = page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle")
    deadline, reloads = time.monotonic() + 120, 0
    while not idle.is_visible():
        assert time.monotonic() < deadline, "the notebook's kernel did not start"
        if theme_error(page).is_visible() and reloads < 2:
            reloads += 1
            print(f"Lab said 'Error Loading Theme'; loading the page again ({reloads})")
            navigate(page, page.reload)
        time.sleep(0.25)
    expect(theme_error(page)).to_have_count(0)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    return page


def wait_ran(page, index, timeout=120_000):
    """Until code cell ``index`` (among all cells) has run: its prompt shows its number, not
    ``[*]`` or nothing (the kernel may still read Idle just after Run All was clicked)."""
    from playwright.sync_api import expect

    prompt = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt")
    expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=timeout)
    expect(page.locator(".jp-StatusBar-Widget")).to_contain_text("| Idle", timeout=timeout)


def shot(locator, name):
    """A screenshot of one element; the window grows for the time it takes when the element is
    taller than the notebook's view (Lab scrolls inside a fixed-height page)."""
    path = os.path.join(ARTIFACTS, name)
    page = locator.page
    size = dict(page.viewport_size)
    height = locator.evaluate("el => el.getBoundingClientRect().height")
    if height + 260 > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": int(height + 320)})
        time.sleep(0.5)  # Lab lays out again
    try:
        locator.scroll_into_view_if_needed()
        page.mouse.move(0, 0)  # no hover highlight in the picture
        locator.screenshot(path=path, animations="disabled")
    finally:
        page.set_viewport_size(size)
    if os.environ.get("DOCKMAGIC_UPDATE_DOCS_IMG"):
        os.makedirs(DOCS_IMG, exist_ok=True)
        shutil.copy(path, os.path.join(DOCS_IMG, name))
    return path


def shot_cells(page, first, last, name):
    """One picture of cells ``first`` to ``last`` (indices among all cells), inputs and outputs."""
    path = os.path.join(ARTIFACTS, name)
    size = dict(page.viewport_size)
    page.set_viewport_size({"width": size["width"], "height": 1400})
    try:
        time.sleep(0.5)
        cells = page.locator(".jp-Notebook .jp-Cell")
        cells.nth(first).evaluate("el => el.scrollIntoView({block: 'start'})")
        time.sleep(0.3)
        page.mouse.move(0, 0)
        boxes = [cells.nth(i).bounding_box() for i in range(first, last + 1)]
        x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
        x1 = max(b["x"] + b["width"] for b in boxes)
        y1 = max(b["y"] + b["height"] for b in boxes)
        page.screenshot(path=path, clip={"x": x0, "y": y0, "width": x1 - x0,
                                         "height": y1 - y0}, animations="disabled")
    finally:
        page.set_viewport_size(size)
    if os.environ.get("DOCKMAGIC_UPDATE_DOCS_IMG"):
        os.makedirs(DOCS_IMG, exist_ok=True)
        shutil.copy(path, os.path.join(DOCS_IMG, name))
    return path


def wait_containers(client, label, timeout=90):
    """The containers labelled LABEL once there is one, spares left out, with id, name and labels. Listed
    without docker-py's per-container inspect, which fails on one removed meanwhile."""
    deadline = time.monotonic() + timeout
    while not (found := [c for c in client.api.containers(all=True, filters={"label": label})
                         if c["Labels"].get("dockmagic.kind") != "spare"]):
        assert time.monotonic() < deadline, f"the notebook started no container ({label})"
        time.sleep(0.2)
    return [types.SimpleNamespace(id=c["Id"], name=c["Names"][0].lstrip("/"), labels=c["Labels"])
            for c in found]


def cell_output_text(page, index):
    """The text of code cell ``index``'s outputs (0-based among all cells)."""
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(
        ".jp-OutputArea").inner_text()


# ---------------------------------------------------------------------------------------------
# the demo notebook
# ---------------------------------------------------------------------------------------------


def test_run_all_shows_the_job_and_its_stop_button_stops_it(lab, browser, docker_client,
                                                           base_image):
    from playwright.sync_api import expect

    shutil.copy(os.path.join(ROOT, "notebooks", "panel.ipynb"), lab[2] / "panel.ipynb")
    remove_labelled(docker_client, DEMO)
    page = open_and_run_all(lab, browser, "panel.ipynb")
    try:
        job = wait_containers(docker_client, DEMO)[0]
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
        shot(page.locator(".dm-panel"), "panel.png")
    except Exception:
        page.screenshot(path=os.path.join(ARTIFACTS, "panel-failure.png"))
        raise
    finally:
        page.close()
        stop_kernels(lab)
        remove_labelled(docker_client, DEMO)


# ---------------------------------------------------------------------------------------------
# the view notebook: a ticking job, the panel, %gpus from the 8-GPU recording
# ---------------------------------------------------------------------------------------------

VIEW_CELLS = [
    "%load_ext dockmagic",
    f"%%docker -d -l {VIEW} {BASE_IMAGE}\n"
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "for step in range(3000):\n"
    "    print('tick', step, flush=True)\n"
    "    time.sleep(0.3)",
    "# The GPU readings are the recorded 8-GPU fixture (synthetic, see its note). GPU 0's "
    "process is given the demo job's host PID, so that the process -> container join and the "
    "user and command read from /proc run for real.",
    "import json, time\n"
    "import dockmagic\n"
    "from dockmagic import lifecycle, nvml\n"
    f"record = json.load(open({MIXED!r}))['snapshots'][0]\n"
    f"job, = [c for c in lifecycle.query_containers(all=False, managed_only=True)\n"
    f"        if c['Labels'].get('dockmagic.test') == {VIEW.split('=')[1]!r}]\n"
    "record['devices'][0]['compute_processes'][0]['pid'] = "
    "lifecycle.inspect_container(job['Id'])['State']['Pid']\n"
    "record['time'] = time.time()\n"
    "nvml.query_record = lambda: dict(record, time=time.time())  # NVML's one read, recorded\n"
    "%docker panel --scope notebook",
    "%gpus auto:2",
    "%gpus",
    "%docker --help",
    "%docker panel --scope notebook",  # shown again: the first one's output says where it went
]
VIEW_PANEL_FIRST, VIEW_GPUS_CELL, VIEW_HELP_CELL = 3, 5, 6  # the cell before %gpus: auto:2


@pytest.fixture
def view_page(lab, browser, docker_client, base_image):
    """The view notebook run in a page; yields (page, job container)."""
    name = write_notebook(lab, f"view-{uuid.uuid4().hex[:6]}.ipynb", VIEW_CELLS)
    remove_labelled(docker_client, VIEW)
    pages = []

    def open_page(width=1280, height=900):
        page = open_and_run_all(lab, browser, name, width, height)
        pages.append(page)
        job = wait_containers(docker_client, VIEW)[0]
        wait_ran(page, len(VIEW_CELLS) - 1)
        return page, job

    try:
        yield open_page
    except Exception:
        for i, page in enumerate(pages):
            page.screenshot(path=os.path.join(ARTIFACTS, f"view-failure-{i}.png"))
        raise
    finally:
        for page in pages:
            page.close()
        stop_kernels(lab)
        remove_labelled(docker_client, VIEW)


def job_row(page, job):
    from playwright.sync_api import expect

    row = page.locator(".dm-row", has_text=job.name)
    expect(row.locator(".dm-s-running")).to_be_visible(timeout=60_000)
    return row


def test_logs_pane_opens_under_its_row_and_follows_new_output(view_page):
    from playwright.sync_api import expect

    page, job = view_page()
    row = job_row(page, job)
    row.locator("button.dm-act-logs").click()
    pane = page.locator(".dm-logs")
    expect(pane).to_be_visible(timeout=15_000)
    # right under its row: the next element after the row's box
    assert row.evaluate("el => el.nextElementSibling && "
                        "el.nextElementSibling.classList.contains('dm-logs')")
    expect(pane.locator("pre")).to_contain_text("tick", timeout=15_000)

    def newest():
        return max(int(n) for n in re.findall(r"tick (\d+)", pane.locator("pre").inner_text()))

    first = newest()
    deadline = time.monotonic() + 30
    # the job ticks every 0.3 s; the panel refreshes every 2 s. 40 lines overflow the box.
    while newest() < max(first + 10, 40):
        assert time.monotonic() < deadline, f"the pane stayed at tick {newest()}"
        time.sleep(0.5)
    # more lines than fit: the box scrolls, and shows its end (the newest line), not the top
    box = pane.locator(".dm-logscroll")
    where = box.evaluate("el => { const r = el.getBoundingClientRect();"
                         " const pre = el.querySelector('pre').getBoundingClientRect();"
                         " return [el.scrollHeight - el.clientHeight, r.top - pre.top,"
                         "         Math.abs(pre.bottom - r.bottom)]; }")
    overflow, hidden_above, bottom_gap = where
    assert overflow > 20 and hidden_above > 20 and bottom_gap < 2, where
    close = pane.locator("button", has_text="close")
    expect(close).to_be_visible()
    assert close.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "close label cut"
    page.mouse.move(0, 0)
    shot(page.locator(".dm-panel"), "panel-logs.png")
    close.click()
    expect(pane).to_be_hidden(timeout=10_000)

    # an ordinary window (1400 px, the file browser open) shows the short ID, which copies the
    # full one (127.0.0.1 is a secure context, so the page may write the clipboard); uptime
    # and CPU went first; a cut image name is whole on hover
    page.set_viewport_size({"width": 1400, "height": 900})
    open_file_browser(page)
    # the table as wide as a person saw it there (about 800 px: Lab's side panels vary)
    table = row.locator(".dm-cellbox")
    width = table.evaluate("el => el.getBoundingClientRect().width")
    page.set_viewport_size({"width": int(1400 - (width - 800)), "height": 900})
    time.sleep(0.5)
    width = table.evaluate("el => el.getBoundingClientRect().width")
    assert 780 <= width <= 820, width
    copy = row.locator(".dm-id .dm-copy")
    expect(copy).to_be_visible(timeout=10_000)
    expect(copy).to_have_text(f"{job.id[:12]} ❐")
    assert copy.evaluate("el => el.closest('.dm-id').scrollWidth <= "
                         "el.closest('.dm-id').clientWidth + 1"), "the short ID is cut"
    assert not row.locator(".dm-up").is_visible() and not row.locator(".dm-cpu").is_visible()
    assert row.locator(".dm-image").get_attribute("title") == BASE_IMAGE
    page.evaluate("navigator.clipboard.writeText('')")
    copy.click()  # (the next refresh may redraw the row, and its "copied" note with it)
    deadline = time.monotonic() + 10
    while page.evaluate("navigator.clipboard.readText()") != job.id:
        assert time.monotonic() < deadline, "the full ID did not reach the clipboard"
        time.sleep(0.2)


def test_panel_cell_column_matches_the_prompt_number(view_page):
    page, job = view_page()
    row = job_row(page, job)
    prompt = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputPrompt").inner_text()
    number = re.search(r"\[(\d+)\]", prompt).group(1)
    assert row.locator(".dm-cell").inner_text().strip() == f"[{number}]"
    assert job.labels["dockmagic.cell"] == number


# Colours: a computed colour as (luminance 0-1, alpha); rgb()/rgba() and color(srgb ...).
_LIGHT_BACKGROUNDS_JS = """(selector) => {
  const parse = (c) => {
    let m = c.match(/^rgba?\\(([^)]+)\\)/);
    if (m) { const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
             return [p[0] / 255, p[1] / 255, p[2] / 255, p.length > 3 ? p[3] : 1]; }
    m = c.match(/^color\\(srgb ([^)]+)\\)/);
    if (m) { const p = m[1].split(/[\\s\\/]+/).filter(Boolean).map(Number);
             return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; }
    return null;
  };
  const light = (c) => { const p = parse(c);
    return p && p[3] > 0.05 && 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2] > 0.75; };
  const found = [];
  for (const root of document.querySelectorAll(selector)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const cs = getComputedStyle(el);
      if (cs.display === 'none') continue;
      const what = el.tagName.toLowerCase() + '.' + [...el.classList].join('.');
      if (light(cs.backgroundColor)) found.push(what + ' background ' + cs.backgroundColor);
      if (el instanceof SVGElement && el.tagName !== 'text' && el.tagName !== 'svg'
          && light(cs.fill)) found.push(what + ' fill ' + cs.fill);
    }
  }
  return found;
}"""


def light_backgrounds(page, selector):
    return page.evaluate(_LIGHT_BACKGROUNDS_JS, selector)


def test_panel_and_gpus_in_light_and_dark_theme(view_page):
    """The panel (with the fixture's GPU cards) and `%gpus` take their colours from the theme:
    in JupyterLab Dark no element has a light background (computed styles), while the same
    check finds light ones in JupyterLab Light (so it can fail)."""
    from playwright.sync_api import expect

    targets = ".dm-panel, .dockmagic-gpus"
    page, job = view_page()
    try:
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "true")
        job_row(page, job)
        cards = page.locator(".dm-card")
        expect(cards).to_have_count(8, timeout=30_000)
        gpus = page.locator(".dockmagic-gpus").last
        expect(gpus).to_contain_text("mem util")
        # %gpus auto:2 said which GPUs and why; %gpus marks them
        said = page.locator(".jp-Notebook .jp-Cell").nth(VIEW_GPUS_CELL - 1)
        expect(said).to_contain_text("GPUs 3 and 6 (pinned by UUID)")
        expect(said).to_contain_text("why: auto:2")
        assert gpus.locator("tr.dmg-gpu.dmg-chosen td.dmg-idx").all_inner_texts() == ["3", "6"]
        # GPU 2's memory is N/A: no bar is drawn (an empty track read as 0 %)
        gpu2 = gpus.locator("tr.dmg-gpu").nth(2)
        expect(gpu2).to_contain_text("N/A")
        assert gpu2.locator(".dmg-bar").nth(1).evaluate(
            "el => getComputedStyle(el).visibility") == "hidden"
        # GPU 0's process: the demo job, joined through /proc and the engine
        expect(gpus.locator("table.dmg-procs")).to_contain_text(job.name)
        time.sleep(8)  # a few more refreshes: the sparklines have some points
        page.mouse.move(0, 0)
        assert light_backgrounds(page, targets), "the check found nothing even in light theme"
        shot(page.locator(".dm-panel"), "panel-light.png")
        shot_cells(page, VIEW_GPUS_CELL - 1, VIEW_GPUS_CELL, "gpus-light.png")

        set_theme(page, DARK)
        page.mouse.move(0, 0)
        found = light_backgrounds(page, targets)
        assert found == [], found
        spark = page.locator(".dm-spark .dm-sp-bg").first
        assert spark.evaluate("el => getComputedStyle(el).fill") != "rgb(238, 238, 238)"
        shot(page.locator(".dm-panel"), "panel-dark.png")
        shot_cells(page, VIEW_GPUS_CELL - 1, VIEW_GPUS_CELL, "gpus-dark.png")
    finally:
        if page.locator("body").get_attribute("data-jp-theme-light") == "false":
            set_theme(page, LIGHT)  # the setting outlives the page


def open_file_browser(page):
    from playwright.sync_api import expect

    browser_panel = page.locator("#filebrowser")
    if not browser_panel.is_visible():
        page.locator('.jp-SideBar [data-id="filebrowser"]').click()
    expect(browser_panel).to_be_visible()
    time.sleep(0.3)  # Lab lays out again


# Where the rendered text of an element goes on to a new line inside a word: per character
# (JS ranges), a character on a lower line box than the one before it within the same block,
# neither of them a space. Returns the text around each such break, "|" marking it.
_WORD_BREAKS_JS = """(root) => {
  const blockOf = (n) => { let e = n.parentElement;
    while (e && e !== root && getComputedStyle(e).display.startsWith('inline')) e = e.parentElement;
    return e; };
  const found = [], range = document.createRange();
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  let prev = null;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const block = blockOf(node);
    if (prev && prev.block !== block) prev = null;
    const text = node.data;
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (ch === '\\n') { prev = null; continue; }
      range.setStart(node, i); range.setEnd(node, i + 1);
      const r = range.getClientRects()[0];
      if (!r) continue;
      if (prev && r.top >= prev.bottom - 2 && /\\S/.test(ch) && /\\S/.test(prev.ch))
        found.push((prev.text.slice(-12) + '|' + text.slice(i, i + 12)).replace(/\\n/g, ' '));
      prev = {ch, bottom: r.bottom, block, text: text.slice(0, i + 1)};
    }
  }
  return found;
}"""


def word_breaks(locator):
    return locator.evaluate(_WORD_BREAKS_JS)


def test_panel_at_1024px_with_the_file_browser_open(view_page):
    """Narrow: uptime and CPU go first; memory, notebook and cell stay whole; the toolbar
    stays on one line and the logs heading breaks only between its parts. `%gpus` fits the
    output area with its numbers whole; `%docker --help` and `%gpus auto:2`'s reasons break
    no word; the panel shown again leaves a line saying where it went."""
    from playwright.sync_api import expect

    page, job = view_page(width=1024, height=800)
    open_file_browser(page)
    row = job_row(page, job)
    # memory needs a stats sample (every few seconds)
    expect(row.locator(".dm-mem")).to_contain_text("iB", timeout=30_000)
    for cls in ("dm-mem", "dm-nb", "dm-cell", "dm-name", "dm-state"):
        cell = row.locator(f".{cls}")
        expect(cell).to_be_visible()
        assert cell.evaluate("el => el.getBoundingClientRect().width > 20"), cls
    for cls in ("dm-mem", "dm-cell"):  # never cut
        fits = row.locator(f".{cls}").evaluate("el => el.scrollWidth <= el.clientWidth + 1")
        assert fits, f"{cls} is cut: {row.locator(f'.{cls}').inner_text()!r}"
    assert re.search(r"\d+(\.\d+)? [MG]iB", row.locator(".dm-mem").inner_text())
    assert row.locator(".dm-nb").inner_text().strip().endswith(".ipynb") or \
        row.locator(".dm-nb").evaluate("el => el.scrollWidth > el.clientWidth")
    # what went first
    hidden = {cls: not row.locator(f".{cls}").is_visible() for cls in ("dm-up", "dm-cpu")}
    assert all(hidden.values()), hidden
    # the toolbar on one line: the prune button beside the title, not under it
    panel = page.locator(".dm-panel")
    tops = panel.evaluate("el => [el.querySelector('.dm-title'), el.querySelector('.dm-prune')]"
                          ".map(e => e.getBoundingClientRect()).map(r => [r.top, r.bottom])")
    assert tops[1][0] < tops[0][1], f"prune stopped went to a second line: {tops}"
    # ... whole: its icon, not squeezed to a sliver by the row
    prune = panel.locator(".dm-prune")
    assert prune.evaluate("el => el.getBoundingClientRect().width") >= 30
    assert prune.locator("i").evaluate("el => el.getBoundingClientRect().width") > 8
    # the scope buttons say what each scope holds
    titles = panel.locator(".widget-toggle-buttons button").evaluate_all(
        "els => els.map(e => e.title)")
    assert len(titles) == 3 and all(len(t) > 20 for t in titles), titles
    # the logs pane's heading breaks between its parts, never inside "(every 2 s)"
    row.locator("button.dm-act-logs").click()
    title = page.locator(".dm-logs .dm-part", has_text="following")
    expect(title).to_be_visible(timeout=15_000)
    lines = title.evaluate("el => { const r = document.createRange(); r.selectNodeContents(el);"
                           " return new Set([...r.getClientRects()].map(x => Math.round(x.top)))"
                           ".size; }")
    assert lines == 1, title.inner_text()
    page.mouse.move(0, 0)
    shot(page.locator(".dm-panel"), "panel-1024.png")
    page.locator(".dm-logs button", has_text="close").click()

    cells = page.locator(".jp-Notebook .jp-Cell")
    # %gpus fits the output area: no horizontal scrolling, nothing cut, numbers on one line
    gpus = page.locator(".dockmagic-gpus").last
    area = cells.nth(VIEW_GPUS_CELL).locator(".jp-OutputArea-output").last
    assert area.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), \
        area.evaluate("el => [el.scrollWidth, el.clientWidth]")
    cut = gpus.evaluate("""el => { const box = el.getBoundingClientRect(); const out = [];
        for (const td of el.querySelectorAll('table.dmg td')) {
          if (getComputedStyle(td).display === 'none') continue;
          const r = td.getBoundingClientRect();
          if (r.right > box.right + 1 || td.scrollWidth > td.clientWidth + 1
              || r.height > 2 * parseFloat(getComputedStyle(td).lineHeight) + 8)
            out.push(td.textContent); }
        return out; }""")
    assert cut == [], cut
    for text in ("117.9 / 140.4 GiB", "694"):
        expect(gpus.locator("table.dmg").first).to_contain_text(text)
    # no word of the help nor of auto:2's reasons goes on to a new line
    help_block = cells.nth(VIEW_HELP_CELL).locator(".dockmagic-help")
    expect(help_block).to_contain_text("--out-pickle NAMES")
    assert word_breaks(help_block) == []
    said = cells.nth(VIEW_GPUS_CELL - 1).locator(".jp-OutputArea-output pre").first
    expect(said).to_contain_text("why: auto:2")
    assert word_breaks(said) == []
    # the help's text starts where other output's text does (no extra indent)
    lefts = [loc.evaluate("el => { const r = document.createRange();"
                          " const t = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);"
                          " let n = t.nextNode(); while (n && !n.data.trim()) n = t.nextNode();"
                          " r.setStart(n, n.data.length - n.data.trimStart().length);"
                          " r.setEnd(n, n.data.length - n.data.trimStart().length + 1);"
                          " return r.getClientRects()[0].left; }")
             for loc in (said, help_block)]
    assert abs(lefts[0] - lefts[1]) <= 4, lefts  # was 2em (~26 px) further in
    shot_cells(page, VIEW_GPUS_CELL - 1, VIEW_GPUS_CELL, "gpus-1024.png")
    shot(help_block, "help-1024.png")
    # shown again: the first panel's output says where the live one is; one panel is live
    expect(page.locator(".dm-panel")).to_have_count(1)
    again = cells.nth(len(VIEW_CELLS) - 1).locator(".jp-InputPrompt").inner_text()
    number = re.search(r"\[(\d+)\]", again).group(1)
    expect(cells.nth(VIEW_PANEL_FIRST).locator(".jp-OutputArea-output")).to_have_text(
        f"dockmagic: this panel moved to cell [{number}]")


# ---------------------------------------------------------------------------------------------
# a cell as a person sees it: interrupted, failing
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cells_page(lab, browser, docker_client, base_image):
    made = []

    def open_page(cells):
        name = write_notebook(lab, f"cells-{uuid.uuid4().hex[:6]}.ipynb", cells)
        page = open_and_run_all(lab, browser, name)
        made.append(page)
        return page

    try:
        yield open_page
    except Exception:
        for i, page in enumerate(made):
            page.screenshot(path=os.path.join(ARTIFACTS, f"cells-failure-{i}.png"))
        raise
    finally:
        for page in made:
            page.close()
        stop_kernels(lab)
        remove_labelled(docker_client, CELLS)


def test_interrupted_cell_shows_at_most_three_lines_of_its_own(cells_page, docker_client):
    from playwright.sync_api import expect

    page = cells_page(["%load_ext dockmagic",
                       f"%%docker -l {CELLS} {BASE_IMAGE}\n"
                       "import time\n"
                       "for i in range(10000):\n"
                       "    print('tick', i, flush=True)\n"
                       "    time.sleep(0.1)"])
    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    expect(cell.locator(".jp-OutputArea")).to_contain_text("tick 5", timeout=90_000)
    page.locator('[data-command="notebook:interrupt-kernel"]').first.click()
    wait_ran(page, 1, timeout=60_000)
    text = cell.locator(".jp-OutputArea").inner_text()
    # the container's own text: its ticks (each whole) and its own Python traceback
    own = re.sub(r"(?ms)^Traceback \(most recent call last\):\n.*?^KeyboardInterrupt\s*$", "",
                 text, count=1)
    assert own != text, "no traceback from the container:\n" + text
    lines = [ln for ln in own.splitlines() if ln.strip()]
    # not the interrupt's: a kernel's first %%docker cell names containers that kernels
    # now gone left on the engine (a shared engine here may hold some from other runs)
    lines = [ln for ln in lines if "left by kernels that are gone" not in ln]
    others = [ln for ln in lines if not re.fullmatch(r"tick \d+", ln.strip())]
    assert len(others) <= 3, "\n".join(others)
    # one of dockmagic's own: the status line goes, the interrupt's line says it all
    assert len(others) == 1 and re.fullmatch(
        r"interrupted; container [0-9a-f]{12} stopped by SIGINT in \d+\.\d s and removed",
        others[0]), "\n".join(others)
    assert not re.search(r"magics\.py|runner\.py|spare\.py|recv", text), text
    assert docker_client.containers.list(all=True, filters={"label": CELLS}) == []


def test_failing_cell_shows_its_traceback_once(cells_page):
    page = cells_page(["%load_ext dockmagic",
                       f"%%docker -l {CELLS} {BASE_IMAGE}\n"
                       "def divide(a, b):\n"
                       "    return a / b\n"
                       "print('before')\n"
                       "divide(1, 0)"])
    wait_ran(page, 1)
    text = cell_output_text(page, 1)
    assert "before" in text
    assert text.count("Traceback (most recent call last)") == 1, text
    assert text.count("ZeroDivisionError") >= 1
    assert text.count("return a / b") == 1, text  # with its source line, once


# ---------------------------------------------------------------------------------------------
# every engine: the rig added, a job on each engine
# ---------------------------------------------------------------------------------------------

ENGINES = "dockmagic.test=browser-engines"


def test_engine_column_and_gpu_headings_per_engine_render(lab, browser, docker_client,
                                                          base_image, rig):
    """With the rig added, the panel's table has an engine column (each job under its own
    engine) and the GPU part a heading per engine (name, endpoint, reachable, GPU state)."""
    from playwright.sync_api import expect

    from remote_rig import rig_exec

    xdg = lab[2] / f"xdg-{uuid.uuid4().hex[:6]}"  # the kernel's engines.toml, not the user's
    sleeper = "import time\ntime.sleep(600)"
    name = write_notebook(lab, f"engines-{uuid.uuid4().hex[:6]}.ipynb", [
        f"import os\nos.environ['XDG_CONFIG_HOME'] = {str(xdg)!r}",
        "%load_ext dockmagic",
        f"%docker engines add rig ssh://{rig}",
        f"%%docker -d --engine rig -l {ENGINES} {BASE_IMAGE}\n{sleeper}",
        f"%%docker -d -l {ENGINES} {BASE_IMAGE}\n{sleeper}",
        "import dockmagic\npanel = dockmagic.Panel(scope='notebook')\npanel",
    ])
    remove_labelled(docker_client, ENGINES)
    page = open_and_run_all(lab, browser, name)
    try:
        wait_ran(page, 5)
        there = rig_exec("docker", "ps", "--filter", f"label={ENGINES}",
                         "--format", "{{.Names}}").stdout.decode().split()
        here = [c.name for c in wait_containers(docker_client, ENGINES)]
        assert len(there) == 1 and len(here) == 1, (there, here)
        panel = page.locator(".dm-panel")
        expect(panel.locator(".dm-head .dm-engine")).to_have_text("engine", timeout=30_000)
        for job, engine in ((there[0], "rig"), (here[0], "local")):
            row = panel.locator(".dm-row", has_text=job)
            expect(row.locator(".dm-s-running")).to_be_visible(timeout=60_000)
            cell = row.locator(".dm-engine")
            expect(cell).to_be_visible()
            expect(cell).to_have_text(engine)
        heads = panel.locator(".dm-engine-h")
        expect(heads).to_have_count(2, timeout=30_000)
        expect(heads.nth(0)).to_contain_text("GPUs on local")
        expect(heads.nth(1)).to_contain_text("GPUs on rig")
        expect(heads.nth(1)).to_contain_text(f"ssh://{rig}")
        expect(heads.nth(1)).to_contain_text("reachable", timeout=30_000)
        expect(heads.nth(1)).to_contain_text("no GPUs")
        expect(heads.nth(1)).to_contain_text("nvidia-smi not found")
        expect(heads.nth(0)).to_contain_text("NVML")  # no driver here either
        # each row's reads come from its own engine: inspect (uptime) and stats (memory)
        for job in (there[0], here[0]):
            row = panel.locator(".dm-row", has_text=job)
            expect(row.locator(".dm-mem")).to_contain_text("iB", timeout=30_000)
            expect(row.locator(".dm-up")).to_contain_text(re.compile(r"\d+[smh]"))
        # the heading is laid out as one line of text above its (here empty) cards
        assert heads.nth(1).evaluate("el => el.getBoundingClientRect().height < 40")
        page.mouse.move(0, 0)
        shot(panel, "panel-engines.png")
    except Exception:
        page.screenshot(path=os.path.join(ARTIFACTS, "engines-failure.png"))
        raise
    finally:
        page.close()
        stop_kernels(lab)
        left = rig_exec("docker", "ps", "-aq", "--filter", f"label={ENGINES}",
                        check=False).stdout.decode().split()
        if left:
            rig_exec("docker", "rm", "-f", *left, check=False)
        remove_labelled(docker_client, ENGINES)
