"""The live panel lists every engine: the local one and the rig (a real engine over SSH)."""
import pytest


pytestmark = pytest.mark.engine


def test_panel_lists_both_engines(rig, tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from dockmagic.panel import Panel
    from dockmagic.remote import engines, store, urls

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    panel = Panel(autostart=False, notebook="nb", kernel="k")
    try:
        panel.refresh_engines()  # no engine added: no line, no cost
        assert panel.engines_w.value == "" and panel.engines_w.layout.display == "none"
        store.add_engine(urls.parse_endpoint("rig", f"ssh://{rig}"))
        panel.refresh_engines()
        line = panel.engines_w.value
        assert panel.engines_w.layout.display != "none"
        assert "<b>local</b>" in line and "<b>rig</b>" in line
        assert line.count("running") == 2 and "not reachable" not in line, line
    finally:
        panel.close()
        engines.close_all()


def test_panel_says_which_engine_does_not_answer(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from dockmagic.panel import Panel
    from dockmagic.remote import engines, store, urls

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store.add_engine(urls.parse_endpoint("gone", "ssh://root@127.0.0.1:1"))
    panel = Panel(autostart=False, notebook="nb", kernel="k")
    try:
        panel.refresh_engines()
        line = panel.engines_w.value
        assert "<b>gone</b> not reachable" in line and "<b>local</b>" in line
        assert "unreachable within 5 s" in line  # the reason, on hover
    finally:
        panel.close()
        engines.close_all()
