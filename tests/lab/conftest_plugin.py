"""pytest fixtures for the lab: ``lab`` (session) and ``lab_guest`` (a factory).

Loaded by tests/conftest.py with ``pytest_plugins = ["tests.lab.conftest_plugin"]``.

Where the lab cannot run (not Linux, not root, no libvirtd...) its tests are
skipped with the reason, except under ``CI=true``, where they fail instead.

The session's lab is named ``test-<pid>``, so test runs of different people on
one machine (and the demo lab) never meet. Set ``KVMWEB_TEST_LAB_NAME`` to use
a lab of that name instead: one already up is reused and left up afterwards,
which saves the start-up when running a few tests again and again.
"""

import os
import shutil
import sys
import uuid

import pytest

from .lab import Lab, LabError, state_root

NEEDED_BINARIES = (
    "ip",
    "unshare",
    "tini",
    "libvirtd",
    "virtlogd",
    "qemu-system-x86_64",
    "bindfs",
    "sshd",
    "ssh-keygen",
    "ssh-keyscan",
    "certtool",
    "gcc",
    "apt-get",
    "dpkg",
)


def lab_unavailable_reason():
    """Why the lab cannot run on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux (network and mount namespaces)"
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, bridges, libvirtd)"
    missing = [
        b for b in NEEDED_BINARIES if shutil.which(b) is None and not os.path.exists(os.path.join("/usr/sbin", b))
    ]
    if missing:
        return "missing for the lab: %s" % ", ".join(missing)
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    return None


def _in_ci():
    return os.environ.get("CI", "").lower() == "true"


def _remove_stale_test_labs():
    """Take down test labs whose pytest process is gone (a crashed run)."""
    root = state_root()
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        if not name.startswith("test-"):
            continue
        lab = Lab(name=name)
        state = lab._load()
        owner = (state or {}).get("owner_pid")
        if owner and os.path.exists("/proc/%d" % owner):
            continue
        try:
            lab.down()
        except Exception:
            pass


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs the lab of simulated KVM hosts (root, Linux, libvirtd, QEMU)")


def pytest_collection_modifyitems(config, items):
    # A test that uses the lab is a lab test, marked or not.
    for item in items:
        if {"lab", "lab_guest"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab():
    """The session's lab of two hosts, kvm01 and kvm02, both with br0."""
    reason = lab_unavailable_reason()
    if reason:
        if _in_ci():
            pytest.fail("CI=true and the lab cannot run: " + reason)
        pytest.skip(reason)
    name = os.environ.get("KVMWEB_TEST_LAB_NAME")
    keep = False
    if name:
        the_lab = Lab(name=name)
        keep = the_lab.is_up()
    else:
        _remove_stale_test_labs()
        the_lab = Lab(name="test-%d" % os.getpid())
    try:
        the_lab.up()
    except (LabError, OSError) as exc:
        try:
            the_lab.down()
        finally:
            pytest.fail("the lab did not start: %s" % exc)
    yield the_lab
    if not keep:
        the_lab.down()


@pytest.fixture
def lab_guest(lab):
    """Factory: lab_guest(host="kvm01", name=None, **make_guest_kwargs) -> name.

    Every guest it made is removed (from every host) after the test.
    """
    made = []

    def make(host="kvm01", name=None, **kwargs):
        name = name or "g-%s" % uuid.uuid4().hex[:8]
        made.append(name)
        lab.make_guest(host, name, **kwargs)
        return name

    yield make
    for name in made:
        lab.remove_guest(name)
