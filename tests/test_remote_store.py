"""Engine addresses and the engines file under the XDG config folder. Pure / file I/O only."""
import hashlib
import json

import pytest

from dockmagic.remote import store
from dockmagic.remote.urls import EndpointError, parse_endpoint


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return tmp_path / "cfg" / "dockmagic" / "engines.toml"


def test_ssh_urls_keep_user_port_and_alias_case():
    ep = parse_endpoint("gpu", "ssh://me@GPU-Box:2222")
    assert (ep.kind, ep.user, ep.host, ep.port) == ("ssh", "me", "GPU-Box", 2222)
    assert ep.ssh_target == "me@GPU-Box"
    alias = parse_endpoint("rig", "ssh://dockmagic-rig")
    assert (alias.host, alias.user, alias.port, alias.remote_socket) == (
        "dockmagic-rig", None, None, "/var/run/docker.sock")


@pytest.mark.parametrize("name,url,tls,words", [
    ("bad name", "ssh://h", {}, "engine name"),
    ("x", "ftp://h", {}, "not an engine address"),
    ("x", "ssh://", {}, "names no host"),
    ("x", "tcp://h", {}, "tcp://host:port"),
    ("x", "tcp://h:2376", {"tlsverify": "1"}, "--tlscacert"),
    ("x", "ssh://h", {"tlsverify": "1"}, "tcp:// engines"),
    ("x", "tcp://h:2376", {"tlsfoo": "1"}, "unknown option"),
])
def test_bad_addresses_are_one_line_naming_the_fix(name, url, tls, words):
    with pytest.raises(EndpointError) as info:
        parse_endpoint(name, url, tls)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_engines_file_round_trip_under_xdg(xdg):
    store.add_engine(parse_endpoint("rig", "ssh://root@dockmagic-rig:22"))
    store.add_engine(parse_endpoint("ci", "tcp://10.0.0.5:2376",
                                    {"tlsverify": "1", "tlscacert": '/p/"ca".pem'}))
    assert xdg.exists() and (xdg.stat().st_mode & 0o777) == 0o600
    engines = store.load_engines()
    assert list(engines) == ["rig", "ci"]
    assert engines["rig"].url == "ssh://root@dockmagic-rig:22"
    assert dict(engines["ci"].tls) == {"tlsverify": "1", "tlscacert": '/p/"ca".pem'}
    store.remove_engine("rig")
    assert list(store.load_engines()) == ["ci"]
    with pytest.raises(EndpointError, match="no engine named 'rig'"):
        store.remove_engine("rig")


def test_config_path_defaults_to_dot_config(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.config_path() == str(tmp_path / ".config" / "dockmagic" / "engines.toml")


def test_local_is_reserved(xdg):
    with pytest.raises(EndpointError, match="local engine"):
        store.add_engine(parse_endpoint("local", "ssh://h"))


def test_broken_file_names_the_file(xdg):
    xdg.parent.mkdir(parents=True)
    xdg.write_text("[engines.x\n")
    with pytest.raises(EndpointError, match="engines.toml"):
        store.load_engines()


def test_docker_context_is_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    digest = hashlib.sha256(b"lab").hexdigest()
    meta = tmp_path / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": "lab", "Endpoints": {"docker": {"Host": "tcp://lab:2376"}}}))
    tls = tmp_path / "contexts" / "tls" / digest / "docker"
    tls.mkdir(parents=True)
    for f in ("ca.pem", "cert.pem", "key.pem"):
        (tls / f).write_text("x")
    ep = store.endpoint_from_context("lab", "lab")
    assert ep.url == "tcp://lab:2376" and ep.context == "lab"
    assert dict(ep.tls)["tlsverify"] == "1" and dict(ep.tls)["tlscacert"] == str(tls / "ca.pem")
    with pytest.raises(EndpointError, match="no docker context 'nope'"):
        store.endpoint_from_context("x", "nope")
