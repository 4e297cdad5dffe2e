"""The URI allowlist: every way a URI could make libvirt run or read something is
refused, when saved (POST and PATCH), and again wherever a stored URI is used."""

import os
import stat
import tempfile

import pytest

from hosts import libvirt as libvirt_client
from hosts import sync
from hosts.models import Host

pytestmark = pytest.mark.django_db

# Each URI the issue lists (and the same written the ways libvirt also
# decodes: percent-encoding, upper case, repeated keys), with words the 400
# must carry: which part is wrong. {script} creates a marker file if run;
# {secret} is a root-only file outside any directory kvmweb writes.
REFUSED = [
    ("qemu+ext:///system?command={script}", "'command': it names a program kvmweb's server would run"),
    ("qemu+ssh://kvm02/system?command={script}", "'command'"),
    ("qemu+ssh://kvm02/system?netcat={script}", "'netcat': it names a program the host would run"),
    ("qemu+ssh://kvm02/system?socket=/run/libvirt/libvirt-sock", "'socket'"),
    ("qemu+ssh://kvm02/system?keyfile=/root/.ssh/id_rsa", "'keyfile'"),
    ("qemu+ssh://kvm02/system?known_hosts=/etc/passwd", "'known_hosts'"),
    ("qemu+libssh://kvm02/system?known_hosts_verify=ignore", "'known_hosts_verify'"),
    ("qemu+tls://kvm02/system?no_verify=1", "'no_verify'"),
    ("qemu+tls://kvm02/system?pkipath=/root", "'pkipath'"),
    ("qemu+tls://kvm02/system?tls_priority=NORMAL:%2BVERS-SSL3.0", "'tls_priority'"),
    ("qemu+libssh://kvm02/system?sshauth=password", "'sshauth'"),
    ("qemu+tcp://kvm02/system?name=test:///etc/shadow", "'name': it makes the host's libvirtd open another URI"),
    ("test:///etc/shadow", "The only test URI kvmweb accepts is test:///default"),
    ("test:///{secret}", "The only test URI kvmweb accepts is test:///default"),
    ("test+tcp://kvm02/{secret}", "The only test URI kvmweb accepts is test:///default"),
    ("lxc:///system", "'lxc' is not allowed as a libvirt driver"),
    ("qemu+unix:///system?socket=/run/evil.sock", "'socket'"),
    # decoded as libvirt decodes them
    ("qemu+ssh://kvm02/system?%63ommand={script}", "'command'"),
    ("qemu+ssh://kvm02/system?COMMAND={script}", "'command'"),
    ("qemu+ssh://kvm02/system?no_tty=1&command={script}&command=x", "'command'"),
    ("qemu+ssh://kvm02/system?mode=auto;netcat={script}", "'netcat'"),
    ("qemu+ssh://kvm02/syst%65m?%6eame=test:///etc/shadow", "'name'"),
    ("QEMU+EXT:///system?Command={script}", "'command'"),
    ("qemu+ext:///system", "The transport 'ext' is not allowed"),
    ("qemu+%65xt://kvm02/system", "The transport 'ext' is not allowed"),
    # the other parts
    ("qemu+ssh://root:secret@kvm02/system", "A password does not belong in the URI"),
    ("qemu+ssh://-oProxyCommand=touch%20x/system", "is not a plain DNS name or IP address"),
    ("qemu+ssh://kvm02%2F..%2Fx/system", "is not a plain DNS name or IP address"),
    ("qemu+ssh://kvm02/session", "The path must be exactly /system, not '/session'"),
    ("qemu+ssh://kvm02/system/", "The path must be exactly /system"),
    ("qemu:///system", "Name the transport"),
    ("qemu://kvm02/system", "Name the transport"),
    ("qemu+libssh2://kvm02/system", "The transport 'libssh2' is not allowed"),
    ("qemu+ssh://kvm02/system#x", "The part after '#' is not allowed"),
    ("qemu+ssh://kvm02/system?", "Remove the '?'"),
]


@pytest.fixture
def script(tmp_path):
    """A program that leaves a marker if anything runs it; refused URIs must not."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.sh"
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)
    return path, marker


@pytest.fixture
def secret():
    """A root-only file outside the test-driver directory, its first line a sentinel."""
    fd, path = tempfile.mkstemp(prefix="kvmweb-secret-", suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write("SENTINEL-SECRET-LINE\n")
    os.chmod(path, stat.S_IRUSR)
    yield path
    os.unlink(path)


@pytest.fixture
def everything_allowed(settings):
    """Both switches on: the refusals below hold even then."""
    settings.KVMWEB_ALLOW_TCP = True
    settings.KVMWEB_ALLOW_TEST_DRIVER = True


def _fill(uri, script, secret):
    return uri.format(script=script[0], secret=secret.lstrip("/"))


@pytest.mark.parametrize("uri, says", REFUSED)
def test_registering_a_dangerous_uri_gets_a_400_that_says_what_is_wrong(
    api, operator, script, secret, everything_allowed, uri, says
):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm02", "uri": _fill(uri, script, secret)}, format="json")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["uri"])
    assert says in message
    assert "qemu+ssh://" in message or "test:///default" in message, "the message says what to write instead"
    assert not Host.objects.exists()
    assert not script[1].exists(), "the URI's program ran"
    assert "SENTINEL" not in response.content.decode()


@pytest.mark.parametrize("uri, says", REFUSED)
def test_changing_a_hosts_uri_to_a_dangerous_one_gets_the_same_400(
    api, operator, script, secret, everything_allowed, uri, says
):
    host = Host.objects.create(name="kvm02", uri="qemu+ssh://root@kvm02/system")
    api.force_authenticate(operator)
    response = api.patch(f"/api/hosts/{host.pk}/", {"uri": _fill(uri, script, secret)}, format="json")
    assert response.status_code == 400, response.content
    assert says in " ".join(response.json()["uri"])
    host.refresh_from_db()
    assert host.uri == "qemu+ssh://root@kvm02/system"
    assert not script[1].exists()


def test_the_program_in_such_a_uri_does_run_when_libvirt_gets_it(script):
    """The control for the tests above: the marker is a real signal, not one that never appears."""
    import libvirt

    with pytest.raises(libvirt.libvirtError):
        libvirt.open(f"qemu+ext:///system?command={script[0]}")
    assert script[1].exists()


@pytest.mark.parametrize(
    "setting, uri, says",
    [
        ("KVMWEB_ALLOW_TCP", "qemu+tcp://kvm02/system", "qemu+tcp is refused"),
        ("KVMWEB_ALLOW_TEST_DRIVER", "test:///default", "libvirt's test driver is refused here"),
    ],
)
def test_tcp_and_the_test_driver_need_their_switch(api, operator, settings, setting, uri, says):
    setattr(settings, setting, False)
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm02", "uri": uri}, format="json")
    assert response.status_code == 400
    assert says in response.json()["uri"][0]
    setattr(settings, setting, True)
    assert api.post("/api/hosts/", {"name": "kvm02", "uri": uri}, format="json").status_code == 201


@pytest.mark.parametrize(
    "written, stored",
    [
        ("  QEMU+SSH://root@KVM02.Example.ORG/system ", "qemu+ssh://root@kvm02.example.org/system"),
        ("qemu+ssh://root@kvm02:2222/syst%65m", "qemu+ssh://root@kvm02:2222/system"),
        ("qemu+tls://[fd00::0:2]/system", "qemu+tls://[fd00::2]/system"),
        ("qemu+libssh://10.0.0.2/system", "qemu+libssh://10.0.0.2/system"),
    ],
)
def test_an_allowed_uri_is_stored_as_kvmweb_rebuilds_it(api, operator, written, stored, settings):
    # Registering scans the host's SSH key; no host answers at these addresses:
    # one second's wait instead of five.
    settings.KVMWEB_CONNECT_TIMEOUT = 1
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm02", "uri": written}, format="json")
    assert response.status_code == 201, response.content
    assert Host.objects.get().uri == stored


@pytest.mark.parametrize("uri", ["qemu+ext:///system?command={script}", "test:///{secret}"])
def test_a_stored_row_with_a_refused_uri_shows_offline_and_nothing_connects(script, secret, uri):
    # Saved before the allowlist existed: the ORM does not run validators.
    host = Host.objects.create(name="old", uri=_fill(uri, script, secret))
    result = sync.sync_host(host)
    host.refresh_from_db()
    assert not result.online
    assert host.status == "offline"
    assert host.status_reason.startswith("kvmweb will not connect with this URI any more")
    assert "SENTINEL" not in host.status_reason + host.status_detail
    assert not script[1].exists()
    assert not libvirt_client.reachable(host.uri)


def test_a_migrations_destination_uri_is_checked_again_before_libvirt_gets_it(script):
    with libvirt_client.open_host("test:///default") as conn:
        uuid = conn.inventory().domains[0].uuid
        with pytest.raises(libvirt_client.HostError) as refused:
            conn.migrate(uuid, f"qemu+ext:///system?command={script[0]}", ["peer2peer"])
    assert refused.value.code == "uri_refused"
    assert not script[1].exists()
