"""The test rig (a "remote GPU server" in a container, scripts/ensure-rig.sh) as fixtures."""
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RIG = os.environ.get("DOCKMAGIC_RIG_NAME", "dockmagic-rig")


def rig_exec(*argv, check=True, input=None) -> subprocess.CompletedProcess:
    """A command inside the rig itself (not over SSH): the tests' independent view of it."""
    return subprocess.run(["docker", "exec", "-i", RIG, *argv], input=input,
                          capture_output=True, check=check)


def rig_containers(label="dockmagic.managed"):
    out = rig_exec("docker", "ps", "-aq", "--filter", f"label={label}").stdout.decode()
    return out.split()


@pytest.fixture(scope="session")
def rig():
    """Start the rig (idempotent) and return the ssh alias ensure-rig.sh wrote."""
    res = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-rig.sh")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"the rig did not start (scripts/ensure-rig.sh): {res.stderr[-2000:]}")
    return RIG


def rig_env() -> dict:
    """What scripts/ensure-rig.sh recorded (ports, the key, the TCP engine's TLS folder)."""
    import pwd
    home = pwd.getpwuid(os.getuid()).pw_dir  # ensure-rig writes under the passwd home's .ssh
    with open(os.path.join(home, ".ssh", RIG, "env")) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


@pytest.fixture(scope="session")
def rig_tcp(rig) -> str:
    """`URL --tls* options` of the rig's engine on its loopback TCP port (mutual TLS)."""
    env = rig_env()
    tls = env["DOCKMAGIC_RIG_TLS"]
    return (f"tcp://127.0.0.1:{env['DOCKMAGIC_RIG_TCP_PORT']} --tlsverify "
            f"--tlscacert {tls}/ca.pem --tlscert {tls}/cert.pem --tlskey {tls}/key.pem")
