"""Properties of dockmagic.translate: any argv fails only with TranslateError; valid specs
survive ``parse_run_args(spec.to_cli())``."""
import os
import shlex

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dockmagic import translate as T

CWD = "/work/proj"
ENVIRON = {"HOME": "/home/me", "SET_VAR": "value"}
EXAMPLES = int(os.environ.get("DOCKMAGIC_HYPOTHESIS_EXAMPLES", "250"))  # raise it to hunt bugs
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# ---- any argv -------------------------------------------------------------------------------

LONG_FLAGS = sorted("--" + name for name in T._LONG)
SHORT_FLAGS = sorted("-" + c for c in T._SHORT)
FRAGMENTS = ["all", "2", "-1", "device=0,1", '"device=0,1"', "count=", "capabilities=", "=",
             ":", "::", ",", '"', "/", "./x", "..", "~", "/a:/b:ro", "a:/b", "1g", "8 g", "0x10",
             "010", "1.5", "1/3", "-", "--", "true", "yes", "type=bind,src=/x,dst=/y", "dst=",
             "nofile=1:2", "127.0.0.1:8888:8888", "[::1]:1:1", "on-failure:3", "seccomp=x.json",
             "systempaths=unconfined", "net.a=1", "nvidia.com/gpu=all", "a/b=c", "/dev/null:r",
             "img", "Img", "img:tag", "sha256:" + "a" * 64, "name=n,alias=a", "\n", "\x00", "é",
             "\ud800", "linux/amd64", "host-gateway"]
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
junk = st.text(st.one_of(st.characters(), surrogates), max_size=12)
token = st.one_of(
    st.sampled_from(LONG_FLAGS), st.sampled_from(SHORT_FLAGS), st.sampled_from(FRAGMENTS), junk,
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(LONG_FLAGS),
              st.one_of(st.sampled_from(FRAGMENTS), junk)),
    st.builds(lambda a, b: a + b, st.sampled_from(SHORT_FLAGS),
              st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from("itdP=ehv"), junk)),
    st.builds(lambda a, b: a + b, st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS)),
)


@SETTINGS
@given(st.lists(token, max_size=10))
def test_any_argv_fails_only_with_translate_error(argv):
    for args in (argv, argv + ["img"]):
        try:
            spec = T.parse_run_args(args, cwd=CWD, environ=ENVIRON)
        except T.TranslateError as exc:
            text = str(exc)
            assert text and "\n" not in text and "internal error" not in text, text
            continue
        spec.to_cli()
        try:
            spec.to_create_kwargs()
        except T.TranslateError:
            pass


@SETTINGS
@given(st.lists(token, max_size=10))
def test_split_run_args_fails_only_with_translate_error(argv):
    try:
        own, rest = T.split_run_args(argv, {"--in": True, "--dry-run": False})
    except T.TranslateError as exc:
        assert "internal error" not in str(exc)
        return
    assert len(rest) <= len(argv)


@SETTINGS
@given(st.one_of(st.sampled_from(FRAGMENTS), junk))
def test_parse_gpus_and_parse_size_fail_only_with_translate_error(text):
    for fn in (T.parse_gpus, T.parse_size):
        try:
            fn(text)
        except T.TranslateError as exc:
            assert "internal error" not in str(exc)


# ---- valid specs round-trip -----------------------------------------------------------------

word = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=8)
safe = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=8)
path = st.lists(safe, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
port = st.integers(0, 65535)
count = st.one_of(st.just("all"), st.integers(-1, 8).map(str))


def opt(flag, values):
    return st.lists(values.map(lambda v: [flag, v]), max_size=2)


gpus = st.one_of(
    count, st.lists(st.integers(0, 7).map(str), min_size=1, max_size=3).map(
        lambda ids: "device=" + ",".join(ids)),
    st.builds(lambda c, d, caps: ",".join(filter(None, [c, d and f"driver={d}", caps])),
              count, st.sampled_from(["", "nvidia"]),
              st.sampled_from(["", "capabilities=utility", '"capabilities=compute,utility"'])),
    st.dictionaries(safe, st.text("ab=,\" ", max_size=4), min_size=1, max_size=2).map(
        lambda d: T._csv_join(["options=" + T._csv_join(f"{k}={v}" for k, v in d.items())])),
)
volume = st.one_of(
    path,
    st.builds(lambda s, t, o: f"{s}:{t}{o}", st.one_of(path, safe.map(lambda x: "./" + x),
                                                       safe.map(lambda x: "vol" + x)),
              path, st.sampled_from(["", ":ro", ":rw", ":z", ":ro,Z", ":rshared", ":nocopy"])),
)
mount = st.builds(
    lambda t, s, d, extra: T._csv_join([f"type={t}"] + ([f"src={s}"] if s else []) + [f"dst={d}"]
                                       + extra[t]),
    st.sampled_from(["bind", "volume", "tmpfs"]), st.one_of(st.just(""), path, word), path,
    st.fixed_dictionaries({
        "bind": st.lists(st.sampled_from(["ro", "bind-propagation=rslave",
                                          "bind-recursive=disabled", "readonly=false"]),
                         max_size=2),
        "volume": st.lists(st.one_of(st.sampled_from(["volume-nocopy", "volume-driver=local"]),
                                     word.map(lambda w: f"volume-label=k={w}"),
                                     word.map(lambda w: f"volume-opt=o={w}")), max_size=2),
        "tmpfs": st.lists(st.sampled_from(["tmpfs-size=64m", "tmpfs-mode=1770", "ro"]),
                          max_size=2)}),
)
publish = st.builds(
    lambda ip, hp, cp, proto: f"{ip}{hp or (':' if ip else '')}{cp}{proto}",
    st.sampled_from(["", "127.0.0.1:", "[::1]:", "0.0.0.0:"]),
    st.one_of(st.just(""), port.map(lambda p: f"{p}:"),
              st.tuples(port, port).map(lambda t: f"{min(t)}-{max(t)}:")), port,
    st.sampled_from(["", "/tcp", "/udp", "/sctp"]))
device = st.one_of(
    st.builds(lambda h, c, p: f"{h}:{c}:{p}", path, path,
              st.sampled_from(["r", "rw", "rwm", "mw"])),
    path, st.sampled_from(["nvidia.com/gpu=all", "nvidia.com/gpu=0", "vendor.io/class=dev-1"]))
ulimit = st.builds(lambda n, s, extra: f"{n}={s}:{s + extra}" if extra >= 0 else f"{n}={s}",
                   st.sampled_from(T._ULIMITS), st.integers(0, 10 ** 6), st.integers(-1, 10))
size = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 4096), st.sampled_from(["", "k", "m", "g"]))
env = st.builds(lambda k, v: f"{k}={v}", word.filter(lambda k: "=" not in k), st.text(max_size=8))
label = st.builds(lambda k, v: f"{k}={v}", safe, st.text(max_size=8))

argv_parts = st.tuples(
    opt("--gpus", gpus), opt("-v", volume), opt("--mount", mount), opt("-p", publish),
    opt("--device", device), opt("--ulimit", ulimit), opt("-e", env), opt("-l", label),
    opt("--shm-size", size), opt("-m", size), opt("--cpus", st.decimals(
        0, 64, places=3, allow_nan=False, allow_infinity=False).map(str)),
    opt("--tmpfs", st.builds(lambda p, o: p + o, path, st.sampled_from(["", ":size=1m", ":rw"]))),
    opt("--add-host", st.builds(lambda h, ip: f"{h}:{ip}", safe,
                                st.sampled_from(["1.2.3.4", "::1", "[::1]", "host-gateway"]))),
    opt("--cap-add", st.sampled_from(["sys_admin", "NET_ADMIN", "ALL", "cap_chown"])),
    opt("--cap-drop", st.sampled_from(["net_raw", "ALL"])),
    opt("--sysctl", st.builds(lambda k, v: f"net.{k}={v}", safe, st.text(max_size=4))),
    opt("--security-opt", st.sampled_from(["no-new-privileges", "label=disable",
                                           "seccomp=unconfined", "systempaths=unconfined"])),
    opt("--restart", st.sampled_from(["no", "always", "on-failure:3", "unless-stopped", ""])),
    opt("-w", word), opt("-u", word), opt("--name", word), opt("-h", word),
    opt("--ipc", st.sampled_from(["host", "private", ""])),
    opt("--network", st.sampled_from(["host", "none", "bridge", "mynet"])).map(lambda x: x[:1]),
    opt("--entrypoint", st.text(max_size=6)), opt("--group-add", word),
    opt("--pids-limit", st.integers(-1, 10 ** 6).map(str)),
    opt("--memory-swappiness", st.integers(-1, 100).map(str)),
    opt("--stop-signal", word), opt("--platform", st.sampled_from(["linux/amd64", ""])),
    st.lists(st.sampled_from(["-d", "-i", "-t", "--rm", "--privileged", "--read-only", "-P",
                              "--init", "--init=false"]), max_size=4),
)


@SETTINGS
@given(argv_parts, st.sampled_from(["img", "python:3.12-slim", "localhost:5000/a/b:1",
                                    "sha256:" + "b" * 64]),
       st.lists(st.text(max_size=6), max_size=3))
def test_valid_specs_round_trip(parts, image, command):
    argv = []
    for group in parts:
        for item in group:
            argv += item if isinstance(item, list) else [item]
    argv += [image] + command
    try:
        spec = T.parse_run_args(argv, cwd=CWD, environ=ENVIRON)
    except T.TranslateError as exc:
        if "--rm and --restart" in str(exc):
            assume(False)  # a real conflict, not a round-trip question
        raise
    back = T.parse_run_args(spec.to_cli(), cwd=CWD, environ=ENVIRON)
    assert back == spec
    assert shlex.split(T.format_cli(spec))[2:] == spec.to_cli()
    spec.to_create_kwargs()


@SETTINGS
@given(gpus)
def test_gpu_values_round_trip(value):
    req = T.parse_gpus(value)
    assert T.parse_gpus(req.to_cli()) == req
