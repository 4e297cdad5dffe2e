"""deploy/'s systemd units: every Procfile line started, each process sandboxed (issue 21, finding 12).

kvmweb.target did not start the events line (watch_hosts), and the unit had
no capability bounding set, address family, system call or kernel
protections: `systemd-analyze security` rated it 8.5 EXPOSED.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmweb.procfile import procfile

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def directives(path):
    found = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            name, _, value = line.partition("=")
            found.setdefault(name.strip(), []).append(value.strip())
    return found


def test_the_target_starts_every_procfile_line():
    wants = " ".join(directives(DEPLOY / "kvmweb.target")["Wants"]).split()
    assert sorted(wants) == sorted(f"kvmweb@{name}.service" for name in procfile())
    assert "kvmweb@events.service" in wants


def test_the_unit_is_sandboxed():
    unit = directives(DEPLOY / "kvmweb@.service")
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["AmbientCapabilities"] == [""]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert "@system-service" in unit["SystemCallFilter"]
    for name in (
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert unit[name] == ["yes"], name
    assert unit["ProtectSystem"] == ["strict"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_rates_the_unit_ok(tmp_path):
    unit = tmp_path / "kvmweb@web.service"
    unit.write_text((DEPLOY / "kvmweb@.service").read_text())
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert level, done.stdout + done.stderr
    assert float(level.group(1)) <= 2.0, done.stdout
