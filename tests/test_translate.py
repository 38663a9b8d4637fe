"""Pure table tests for dockmagic.translate: parse results, SDK kwargs, CLI round trip, errors."""
import os
import shlex

import pytest

from dockmagic import translate as T
from dockmagic.translate import (DeviceMapping, GpuRequest, Mount, PortBinding, RunSpec,
                                 TranslateError, Ulimit, format_cli, parse_gpus, parse_run_args,
                                 parse_size, split_run_args)

CWD = "/work/proj"
ENV = {"HOME": "/home/me", "TOKEN": "s3cret"}


def parse(line, **kw):
    kw.setdefault("cwd", CWD)
    kw.setdefault("environ", ENV)
    return parse_run_args(line, **kw)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.env").write_bytes(b'\xef\xbb\xbfA="x"\n  B=2 \r\n#c\nC=1 # x\nHOME\nUNSET\nE=\n')
    (tmp_path / "b.env").write_text("A=dup\n")
    (tmp_path / "export.env").write_text("export A=1\n")
    (tmp_path / "labels").write_text("  L1=a\nL2='q'\n#x\nL3\n")
    (tmp_path / "sec.json").write_text('{ "defaultAction" : "SCMP_ACT_ALLOW",\n "syscalls": [] }')
    (tmp_path / "bad.json").write_text("{bad")
    return tmp_path


# ---- parse results ------------------------------------------------------------------------

PARSE_TABLE = [
    ("img", dict(image="img", command=None)),
    ("img python -c 'print(1)'", dict(command=("python", "-c", "print(1)"))),
    ("-- img python x.py", dict(image="img", command=("python", "x.py"))),
    ("img -- python x.py", dict(command=("--", "python", "x.py"))),
    ("img echo '' done", dict(command=("echo", "", "done"))),
    ("img --gpus 2 -e X=1", dict(command=("--gpus", "2", "-e", "X=1"), gpus=())),
    ("--rm true", dict(image="true", auto_remove=True)),
    ("-it img", dict(interactive=True, tty=True)),
    ("-ti=false img", dict(interactive=False, tty=True)),
    ("--rm=T -i=false -t=1 img", dict(auto_remove=True, interactive=False, tty=True)),
    ("-itd img", dict(detach=True, interactive=True, tty=True)),
    ("--detach=False img", dict(detach=False)),
    ("-h myhost img", dict(hostname="myhost")),
    ("-eFOO=bar -e=X=1 img", dict(env=("FOO=bar", "X=1"))),
    ("-e A=1 -e B=2 -e A=3 img", dict(env=("A=3", "B=2"))),
    ("-e TOKEN -e UNSET -e HOME= img", dict(env=("TOKEN=s3cret", "UNSET", "HOME="))),
    ("-e 'A B=x y' img", dict(env=("A B=x y",))),
    ("-w /work -u 1000:1000 --name n1 img", dict(workdir="/work", user="1000:1000", name="n1")),
    ("--name '' -w '' -u '' -h '' img", dict(name=None, workdir=None, user=None, hostname=None)),
    ("--entrypoint '' img", dict(entrypoint=("",))),
    ("--entrypoint= img python x", dict(entrypoint=("",), command=("python", "x"))),
    ("--entrypoint 'python -u' img", dict(entrypoint=("python -u",))),
    ("-l b=2 -l a -l 'c=d,e' -l a=1 img", dict(labels=(("a", "1"), ("b", "2"), ("c", "d,e")))),
    ("-l ' lead=x' img", dict(labels=((" lead", "x"),))),
    ("--gpus all img", dict(gpus=(GpuRequest(count=-1),))),
    ("--gpus 2 --gpus device=1 img",
     dict(gpus=(GpuRequest(count=2), GpuRequest(count=0, device_ids=("1",))))),
    ("--shm-size 8g img", dict(shm_size=8589934592)),
    ("--shm-size 0 img", dict(shm_size=None)),
    ("-m 1.5g --memory-swap -1 img", dict(mem_limit=1610612736, memswap_limit=-1)),
    ("--memory-swappiness 0x0a img", dict(mem_swappiness=10)),
    ("--memory-swappiness -1 img", dict(mem_swappiness=None)),
    ("--pids-limit 010 img", dict(pids_limit=8)),
    ("--pids-limit 1_000 img", dict(pids_limit=1000)),
    ("--pids-limit -1 img", dict(pids_limit=-1)),
    ("--cpus 1.5 --cpuset-cpus 0-1 img", dict(nano_cpus=1_500_000_000, cpuset_cpus="0-1")),
    ("--cpus 1/2 img", dict(nano_cpus=500_000_000)),
    ("--cpus 1e-1 img", dict(nano_cpus=100_000_000)),
    ("--cpus 0x1p-2 img", dict(nano_cpus=250_000_000)),
    ("--ipc host --network host img", dict(ipc_mode="host", network_mode="host")),
    ("--net=none img", dict(network_mode="none")),
    ("--network name=mynet img", dict(network_mode="mynet")),
    ("-v ./data:/d -v .:/w -v ..:/up img",
     dict(volumes=("/work/proj/data:/d", "/work/proj:/w", "/work:/up"))),
    ("-v ./data/../models:/m -v ./data/:/d:ro img",
     dict(volumes=("/work/proj/models:/m", "/work/proj/data:/d:ro"))),
    ("-v /tmp/:/data/ -v data:/data2 -v /anon img",
     dict(volumes=("/tmp/:/data/", "data:/data2", "/anon"))),
    ("-v /a:/b -v /a:/b img", dict(volumes=("/a:/b",))),
    ("-v ~/x:/y img", dict(volumes=("~/x:/y",))),
    ("--mount Type=BIND,Source=./x,DST=/y,readonly img",
     dict(mounts=(Mount(type="bind", source="/work/proj/x", target="/y", read_only=True),))),
    ("--mount type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770 img",
     dict(mounts=(Mount(type="tmpfs", target="/t", tmpfs_size=64 << 20, tmpfs_mode=0o1770),))),
    ("--mount 'dst=/a,\"src=x,y\",volume-opt=o=1=2,volume-label=k' img",
     dict(mounts=(Mount(source="x,y", target="/a", volume_options=(("o", "1=2"),),
                        volume_labels=(("k", ""),)),))),
    ("--device /dev/null:r --device /dev//x/:/y/:rw img",
     dict(devices=(DeviceMapping("/dev/null", "/dev/null", "r"),
                   DeviceMapping("/dev//x/", "/y/", "rw")))),
    ("--device nvidia.com/gpu=all --device /dev/fuse img",
     dict(cdi_devices=("nvidia.com/gpu=all",), devices=(DeviceMapping("/dev/fuse", "/dev/fuse"),))),
    ("-p 8888 -p 127.0.0.1::9000 -p '[::1]:80:80/UDP' img",
     dict(ports=(PortBinding("8888/tcp"), PortBinding("9000/tcp", "127.0.0.1", ""),
                 PortBinding("80/udp", "::1", "80")))),
    ("-p 8000-8001:9000-9001 -p 7000-7010:7777 img",
     dict(ports=(PortBinding("9000/tcp", "", "8000"), PortBinding("9001/tcp", "", "8001"),
                 PortBinding("7777/tcp", "", "7000-7010")))),
    ("-p published=8080,target=80,protocol=udp -P img",
     dict(ports=(PortBinding("80/udp", "", "8080"),), publish_all_ports=True)),
    ("--cap-add sys_ptrace --cap-add ALL --cap-add CAP_SYS_PTRACE --cap-drop net_raw img",
     dict(cap_add=("ALL", "CAP_SYS_PTRACE"), cap_drop=("CAP_NET_RAW",))),
    ("--ulimit nofile=2 --ulimit nofile=1024:2048 --ulimit core=0 --ulimit memlock=-1 img",
     dict(ulimits=(Ulimit("core", 0, 0), Ulimit("memlock", -1, -1),
                   Ulimit("nofile", 1024, 2048)))),
    ("--restart on-failure:3 img", dict(restart_policy=("on-failure", 3))),
    ("--restart no img", dict(restart_policy=None)),
    ("--rm --restart no img", dict(auto_remove=True, restart_policy=None)),
    ("--init img", dict(init=True)),
    ("--init=false img", dict(init=False)),
    ("--tmpfs /a:size=1 --tmpfs /a:size=2 --tmpfs /b img",
     dict(tmpfs=(("/a", "size=2"), ("/b", "")))),
    ("--add-host a=1.2.3.4 --add-host 'v6:[::1]' --add-host gw:host-gateway img",
     dict(extra_hosts=("a:1.2.3.4", "v6:::1", "gw:host-gateway"))),
    ("--read-only --group-add video --group-add 44 --privileged img",
     dict(read_only=True, group_add=("video", "44"), privileged=True)),
    ("--security-opt no-new-privileges --security-opt label:disable img",
     dict(security_opt=("no-new-privileges", "label:disable"))),
    ("--security-opt systempaths=unconfined img",
     dict(security_opt=(), systempaths_unconfined=True)),
    ("--sysctl net.a=1 --sysctl net.a=2 --sysctl 'kernel.sem=1 2 3' img",
     dict(sysctls=(("kernel.sem", "1 2 3"), ("net.a", "2")))),
    ("--stop-signal SIGINT --platform linux/amd64 --runtime runc img",
     dict(stop_signal="SIGINT", platform="linux/amd64", runtime="runc")),
    ("localhost:5000/team/img:1.0@sha256:" + "a" * 64, dict()),
    ("Foo/bar", dict(image="Foo/bar")),
]


@pytest.mark.parametrize("line,expected", PARSE_TABLE, ids=[t[0][:60] for t in PARSE_TABLE])
def test_parse_table(line, expected):
    spec = parse(line)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key


def test_list_and_string_forms_agree():
    line = "--gpus '\"device=0,1\"' -v ./x:/y -e 'A=b c' img python -c 'print(1)'"
    assert parse(line) == parse(shlex.split(line))


def test_spec_is_hashable_and_comparable():
    a, b = parse("-e B=1 -l x=1 -l y=2 img"), parse("-l y=2 -l x=1 -e B=1 img")
    assert a == b and hash(a) == hash(b)
    assert {a, b} == {a}


def test_env_files_first_then_flags(files):
    spec = parse(f"--env-file a.env --env-file {files}/b.env -e A=last -e C img", cwd=str(files))
    assert spec.env == ('A=last', 'B=2 ', 'C', 'HOME=/home/me', 'E=')


def test_env_file_format(files):
    spec = parse("--env-file a.env img", cwd=str(files))
    # BOM dropped, quotes kept, leading space trimmed (trailing kept), '#' only at line start,
    # a bare name takes the caller's value and is dropped when unset
    assert spec.env == ('A="x"', 'B=2 ', 'C=1 # x', 'HOME=/home/me', 'E=')


def test_label_file(files):
    spec = parse("--label-file labels -l L1=b img", cwd=str(files))
    assert spec.labels == (("L1", "b"), ("L2", "'q'"))


def test_seccomp_file_is_read_and_compacted(files):
    spec = parse("--security-opt seccomp=sec.json img", cwd=str(files))
    assert spec.security_opt == (f"seccomp={files}/sec.json",)
    kw = spec.to_create_kwargs()
    assert kw["security_opt"] == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}']
    assert parse(spec.to_cli(), cwd="/") == spec


# ---- --gpus ---------------------------------------------------------------------------------

GPU_TABLE = [
    ("all", GpuRequest(count=-1)),
    ("-1", GpuRequest(count=-1)),
    ("count=all", GpuRequest(count=-1)),
    ("2", GpuRequest(count=2)),
    ("+2", GpuRequest(count=2)),
    ("0", GpuRequest(count=0)),
    ("driver=nvidia", GpuRequest(driver="nvidia", count=1)),
    ("device=1", GpuRequest(count=0, device_ids=("1",))),
    ('"device=0,1"', GpuRequest(count=0, device_ids=("0", "1"))),
    ("device=0,1", GpuRequest(count=0, device_ids=("0", "1"))),  # the departure
    ("device=0,1,capabilities=utility",
     GpuRequest(count=0, device_ids=("0", "1"), capabilities=(("utility", "gpu"),))),
    ('"device=0,1",2', GpuRequest(count=2, device_ids=("0", "1"))),
    ("device=GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a",
     GpuRequest(count=0, device_ids=("GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a",))),
    ("all,capabilities=utility", GpuRequest(count=-1, capabilities=(("utility", "gpu"),))),
    ('all,"capabilities=compute,utility"',
     GpuRequest(count=-1, capabilities=(("compute", "utility", "gpu"),))),
    ('"options=foo=bar,baz=qux"', GpuRequest(count=1, options=(("baz", "qux"), ("foo", "bar")))),
    ("count=3,2", GpuRequest(count=2)),
    ("device=", GpuRequest(count=0, device_ids=("",))),
]


@pytest.mark.parametrize("value,expected", GPU_TABLE, ids=[t[0] for t in GPU_TABLE])
def test_parse_gpus(value, expected):
    req = parse_gpus(value)
    assert req == expected
    assert parse_gpus(req.to_cli()) == req


def test_gpu_request_to_api():
    assert parse_gpus("all").to_api() == {"Driver": "", "Count": -1, "DeviceIDs": [],
                                          "Capabilities": [["gpu"]], "Options": {}}


@pytest.mark.parametrize("value,message", [
    ("", "empty"),
    ("ALL", "invalid count 'ALL'"),
    ("0x2", "invalid count"),
    ("2,count=3", "'count' can be given only once"),
    ("all,all", "only once"),
    ("device=\"0,1\"", 'a " inside an unquoted field'),
    ('"device=0,1', "not closed"),
    ("all, capabilities=utility", "unknown key ' capabilities'"),
    ("capabilities=compute,utility", "invalid count 'utility'"),
    ("options=", "options: the value is empty"),
    ("all\ncount=2", "newline"),
    ("device=1,,", "invalid count ''"),
])
def test_parse_gpus_errors(value, message):
    with pytest.raises(TranslateError) as err:
        parse_gpus(value)
    assert message in str(err.value) and "--gpus" in str(err.value)
    assert "\n" not in str(err.value)


# ---- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("8g", 8589934592), ("8G", 8589934592), ("8gb", 8589934592), ("8GiB", 8589934592),
    ("1.5g", 1610612736), ("64M", 67108864), ("1", 1), ("8 g", 8589934592), ("1.9", 1),
    ("1kib", 1024), ("1e3k", 1024000), ("0x1p4", 16), ("1_000", 1000), (".5k", 512),
    ("5.", 5), ("0", 0),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["8gigs", "1gbb", "16x", "-1", "", "1.2.3", "1i", "1ib", "0x10",
                                  "8  g", "1e400", "k", ".k", "100000p"])
def test_parse_size_errors(text):
    with pytest.raises(TranslateError):
        parse_size(text)


# ---- to_create_kwargs -----------------------------------------------------------------------

def test_kwargs_basic():
    kw = parse("--rm -i --gpus all -e A=1 -l k=v -w /w -u 1:2 --name n img python x.py"
               ).to_create_kwargs()
    assert kw == {
        "image": "img", "command": ["python", "x.py"], "detach": False, "auto_remove": True,
        "stdin_open": True, "environment": ["A=1"], "labels": {"k": "v"}, "working_dir": "/w",
        "user": "1:2", "name": "n",
        "device_requests": [{"Driver": "", "Count": -1, "DeviceIDs": [],
                             "Capabilities": [["gpu"]], "Options": {}}],
    }


def test_kwargs_entrypoint_empty_is_a_list_with_one_empty_string():
    assert parse("--entrypoint '' img").to_create_kwargs()["entrypoint"] == [""]


def test_kwargs_volumes_list_form_when_safe():
    kw = parse("-v /h:/c -v /h2:/c2:ro -v vol:/v -v /anon img").to_create_kwargs()
    assert kw["volumes"] == ["/h:/c", "/h2:/c2:ro", "vol:/v", "/anon"]
    assert "mounts" not in kw


def test_kwargs_volumes_dict_form_avoids_the_stray_volume():
    kw = parse("-v /h:/c:z -v /h:/d -v /anon img").to_create_kwargs()
    assert kw["volumes"] == {"/h": {"bind": "/c", "mode": "z"}, b"/h": {"bind": "/d", "mode": "rw"}}
    assert kw["mounts"] == [{"Type": "volume", "Target": "/anon"}]


def test_kwargs_devices_are_dicts_and_cdi_goes_last():
    kw = parse("--device /dev/null:r --device nvidia.com/gpu=0 --gpus 1 img").to_create_kwargs()
    assert kw["devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/null",
                              "CgroupPermissions": "r"}]
    assert kw["device_requests"][-1] == {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0"]}


def test_kwargs_ports():
    kw = parse("-p 8888:8888 -p 9999:8888 -p 127.0.0.1::7000/udp img").to_create_kwargs()
    assert kw["ports"] == {"8888/tcp": [{"HostIp": "", "HostPort": "8888"},
                                        {"HostIp": "", "HostPort": "9999"}],
                           "7000/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}


def test_kwargs_host_network_drops_ports():
    kw = parse("--network host -p 8888:8888 img").to_create_kwargs()
    assert kw["network_mode"] == "host" and "ports" not in kw


def test_kwargs_systempaths_is_spec_data_not_a_private_key():
    spec = parse("--security-opt systempaths=unconfined img")
    kw = spec.to_create_kwargs()
    assert spec.systempaths_unconfined is True
    assert not any(k.startswith("_") for k in kw)  # the engine adds MaskedPaths/ReadonlyPaths
    assert "security_opt" not in kw


def test_kwargs_go_through_docker_py_host_config():
    """The SDK itself accepts every key (except the documented extra) and builds what we mean."""
    from docker.models.containers import _create_container_args

    line = ("-d -it --rm --gpus all --gpus '\"device=0,1\"' -v /h:/c:z -v /anon "
            "--mount type=tmpfs,dst=/t,tmpfs-size=1m -e A=1 -l k=v -w /w -u 1 --name n "
            "--shm-size 1g --ipc host -p 8888:8888 -m 1g --memory-swap 2g "
            "--memory-swappiness 5 --cpus 1.5 --cpuset-cpus 0 --device /dev/null "
            "--device vendor.com/class=x --cap-add sys_admin --cap-drop ALL --privileged "
            "--ulimit nofile=10:20 --runtime runc --init --tmpfs /run --add-host a:1.2.3.4 "
            "-h host --read-only --group-add 5 --pids-limit 10 --security-opt label=disable "
            "--sysctl net.a=1 --stop-signal 9 --platform linux/amd64 -P --restart always "
            "--entrypoint sh img -c true")
    kw = parse(line.replace("--rm ", "")).to_create_kwargs()
    ck = _create_container_args(dict(kw, version="1.41"))
    hc = ck["host_config"]
    assert hc["DeviceRequests"][1]["DeviceIDs"] == ["0", "1"]
    assert hc["Binds"] == ["/h:/c:z"] and ck["volumes"] == ["/c"]
    assert hc["Mounts"][-1] == {"Type": "volume", "Target": "/anon"}
    assert hc["Devices"][0]["PathInContainer"] == "/dev/null"
    assert hc["NanoCpus"] == 1_500_000_000 and hc["ShmSize"] == 1 << 30
    assert hc["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 10, "Hard": 20}]
    assert hc["PortBindings"] == {"8888/tcp": [{"HostIp": "", "HostPort": "8888"}]}
    assert ck["entrypoint"] == ["sh"] and ck["command"] == ["-c", "true"]
    assert ck["detach"] is True and ck["stdin_open"] and ck["tty"]


# ---- the CLI round trip ---------------------------------------------------------------------

ROUND_TRIP = [t[0] for t in PARSE_TABLE] + [
    "--gpus 'all,\"capabilities=compute,utility\"' --gpus '\"options=a=1,b=x,y\"' img",
    "--gpus device=0,1 --gpus 3,driver=nvidia img",
    "--mount 'type=volume,src=v,dst=/x,volume-nocopy,\"volume-label=a=b,c\"' img",
    "--mount type=bind,src=/x,dst=/y,bind-recursive=writable,ro,bind-propagation=rshared img",
    "--mount 'type=bind,\"src=/a \"\"q\"\",b\",dst=/y' img",
    "--device /dev/x/:r --device dev/null:/x img",
    "-p '[fe80::1]:8080:80/sctp' -p 0.0.0.0:1-2:1-2 img",
    "--cpus 0.000000001 --cpus 3 img",
    "--tmpfs '' --tmpfs /x: img",
    "--entrypoint '' img",
]


@pytest.mark.parametrize("line", ROUND_TRIP, ids=[x[:60] for x in ROUND_TRIP])
def test_round_trip(line):
    spec = parse(line)
    argv = spec.to_cli()
    assert parse(argv) == spec
    assert format_cli(spec) == "docker run " + shlex.join(argv)
    assert shlex.split(format_cli(spec))[2:] == argv


def test_to_cli_is_readable():
    spec = parse("--rm --gpus all -v ./x:/x -e A=1 img python x.py")
    assert format_cli(spec) == ("docker run --rm --gpus all -v /work/proj/x:/x -e A=1 "
                                "img python x.py")


def test_to_cli_refuses_an_inexpressible_gpu_request():
    spec = RunSpec(image="img", gpus=(GpuRequest(count=1, capabilities=(("compute",),)),))
    with pytest.raises(TranslateError):
        spec.to_cli()


# ---- split_run_args -------------------------------------------------------------------------

OWN = {"--dry-run": False, "--in": True, "--out": True, "--no-mount": False}


@pytest.mark.parametrize("argv,own,rest", [
    ("--dry-run img", {"--dry-run": True}, ["img"]),
    ("--in a --in=b -v /x:/y --out c img cmd --in z",
     {"--in": ["a", "b"], "--out": ["c"]}, ["-v", "/x:/y", "img", "cmd", "--in", "z"]),
    ("-v --dry-run img", {}, ["-v", "--dry-run", "img"]),          # -v consumes its value
    ("-e --in img --dry-run", {}, ["-e", "--in", "img", "--dry-run"]),
    ("-it --dry-run img", {"--dry-run": True}, ["-it", "img"]),
    ("-itv /a:/b --dry-run img", {"--dry-run": True}, ["-itv", "/a:/b", "img"]),
    ("-iv/a:/b --dry-run img", {"--dry-run": True}, ["-iv/a:/b", "img"]),
    ("-e=X=1 --in x img", {"--in": ["x"]}, ["-e=X=1", "img"]),
    ("--rm --dry-run=false img", {"--dry-run": False}, ["--rm", "img"]),
    ("--name=n --dry-run img", {"--dry-run": True}, ["--name=n", "img"]),
    ("-- --dry-run img", {}, ["--", "--dry-run", "img"]),
    ("--gpus all --no-mount img", {"--no-mount": True}, ["--gpus", "all", "img"]),
    ("--unknown --dry-run img", {"--dry-run": True}, ["--unknown", "img"]),
])
def test_split_run_args(argv, own, rest):
    assert split_run_args(argv, OWN) == (own, rest)
    assert split_run_args(shlex.split(argv), OWN) == (own, rest)


def test_split_run_args_missing_value():
    with pytest.raises(TranslateError, match="--in"):
        split_run_args(["--in"], OWN)


# ---- errors ---------------------------------------------------------------------------------

ERRORS = [
    ("", "needs an IMAGE"),
    ("--rm", "needs an IMAGE"),
    ("-e", "flag needs an argument: -e"),
    ("--name", "flag needs an argument: --name"),
    ("-gpus all img", "unknown shorthand flag: 'g'"),
    ("-itx img", "unknown shorthand flag: 'x'"),
    ("--cap_add X img", "unknown flag: '--cap_add'"),
    ("---rm img", "bad flag syntax"),
    ("-test.v img", "unknown flag"),
    ("--rm=yes img", "--rm: 'yes' is not a boolean"),
    ("--dns 8.8.8.8 img", "--dns is not supported by dockmagic"),
    ("-a stdout img", "-a is not supported by dockmagic"),
    ("--help img", "--help is not supported by dockmagic"),
    ("--sig-proxy=false img", "--sig-proxy is not supported by dockmagic"),
    ("Ubuntu", "must be lowercase"),
    ("img:", "invalid reference format"),
    ("-- --", "invalid reference format"),
    ("-e =x img", "empty name"),
    ("-l 'a b=1' img", "contains whitespace"),
    ("-v '' img", "empty volume spec"),
    ("-v /a::/b img", "empty section"),
    ("-v /a:/b:ro:x img", "too many colons"),
    ("-v a:/data img", "Windows drive"),
    ("-v data img", "absolute container path"),
    ("--mount src=/x img", "target is required"),
    ("--mount type=bind,src=/x,dst=/y,volume-nocopy img", "cannot mix 'volume-*'"),
    ("--mount type=tmpfs,dst=/y,tmpfs-mode=8 img", "tmpfs-mode"),
    ("--mount type=bind,src=/x,dst=/y,bind-recursive=readonly,ro,bind-propagation=rprivate img",
     "not supported by dockmagic"),
    ("--device /dev/null:/dev/x:rwx img", "bad permissions 'rwx'"),
    ("--device dev/null img", "not an absolute path"),
    ("--device v/cc=n img", "CDI"),
    ("-p 127.0.0.1:8888 img", "invalid host port '127.0.0.1'"),
    ("-p 8888/icmp img", "invalid protocol"),
    ("-p 65536 img", "invalid container port"),
    ("-p 8000-8001:9000-9005 img", "ranges differ"),
    ("--ulimit nofile=2048:1024 img", "exceeds hard limit"),
    ("--ulimit as=1 img", "unknown ulimit 'as'"),
    ("--restart :3 img", "no policy"),
    ("--rm --restart always img", "--rm and --restart conflict"),
    ("--add-host a img", "HOST:IP"),
    ("--add-host a:01.2.3.4 img", "not an IP address"),
    ("--security-opt foo img", "KEY=VALUE"),
    ("--security-opt seccomp=/nonexistent.json img", "cannot read the file"),
    ("--sysctl vm.overcommit_memory=1 img", "is not allowed"),
    ("--network '' img", "no network name"),
    ("--network name=n,alias=a img", "not supported by dockmagic"),
    ("--network a --network b img", "more than one --network"),
    ("--platform bogus img", "OS[/ARCH"),
    ("--memory-swappiness 101 img", "0 to 100"),
    ("--pids-limit 1.5 img", "not an integer"),
    ("--cpus 1/3 img", "too precise"),
    ("--cpus inf img", "not a number of CPUs"),
    ("-m -1 img", "invalid size"),
    ("--shm-size 8gigs img", "unknown unit"),
    ("--memory-swap -2 img", "or -1 for unlimited"),
    ("--env-file /nonexistent/env img", "cannot read the file"),
]


@pytest.mark.parametrize("line,message", ERRORS, ids=[e[0][:50] or "empty" for e in ERRORS])
def test_errors(line, message):
    with pytest.raises(TranslateError) as err:
        parse(line)
    text = str(err.value)
    assert message in text
    assert "\n" not in text and "internal error" not in text


def test_env_file_errors(files):
    for name, message in (("export.env", "contains whitespace"), ("missing.env", "cannot read")):
        with pytest.raises(TranslateError, match=message):
            parse(f"--env-file {name} img", cwd=str(files))
    with pytest.raises(TranslateError, match="not valid JSON"):
        parse("--security-opt seccomp=bad.json img", cwd=str(files))


def test_bad_argument_types():
    with pytest.raises(TranslateError):
        parse_run_args(["img", 3])
    with pytest.raises(TranslateError):
        parse_run_args("img 'unclosed")
    with pytest.raises(TranslateError):
        parse_run_args(None)


def test_defaults_use_process_cwd_and_environ(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DM_TRANSLATE_TEST", "yes")
    spec = parse_run_args("-v ./x:/x -e DM_TRANSLATE_TEST img")
    assert spec.volumes == (f"{os.path.realpath(tmp_path)}/x:/x",) or \
        spec.volumes == (f"{tmp_path}/x:/x",)
    assert spec.env == ("DM_TRANSLATE_TEST=yes",)


def test_module_imports_no_docker():
    """translate.py alone (not the package __init__) pulls in none of the heavy libraries."""
    import subprocess
    import sys
    code = ("import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('t', {T.__file__!r}); "
            "m = importlib.util.module_from_spec(s); sys.modules['t'] = m; "
            "s.loader.exec_module(m); "
            "print([x for x in ('docker', 'IPython', 'pynvml', 'ipywidgets') if x in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_internal_names_stay_private():
    assert set(T.__all__) >= {"TranslateError", "RunSpec", "GpuRequest", "parse_run_args",
                              "parse_gpus", "parse_size", "split_run_args", "format_cli"}
