"""libvirt's errors, the four common ones of a migration by hand among them, in plain words with libvirt's text kept."""

import libvirt
import pytest

from hosts.libvirt import HostError, HostUnreachable, open_host, translate


def libvirt_error(message, code=libvirt.VIR_ERR_INTERNAL_ERROR):
    """A libvirtError as libvirt raises it, for errors a lab cannot provoke."""
    libvirt.virResetLastError()
    error = libvirt.libvirtError(message)
    error.err = (code, 0, message, 0, "", None, None, 0, 0)
    return error


def test_a_uri_libvirt_cannot_parse():  # "Unable to parse URI"
    # kvmweb refuses such a URI when the host is registered; libvirt's own
    # refusal still reads plainly should one get through.
    with pytest.raises(libvirt.libvirtError) as caught:
        libvirt.open("qemu://%%%/system")
    error = translate(caught.value, "qemu://%%%/system")
    assert "libvirt cannot parse the URI" in error.plain
    assert "Unable to parse URI" in error.detail


def test_an_unreachable_host_says_what_to_check():  # "No route to host", at connect time
    with pytest.raises(HostUnreachable) as caught:
        with open_host("qemu+tcp://127.0.0.1:1/system", timeout=2):
            pass
    assert "Check that the host is up, that libvirtd listens there (listen_tcp = 1" in caught.value.plain
    assert caught.value.permanent is False


def test_the_migration_port_blocked_on_the_target():  # "No route to host", as virsh prints it
    error = translate(
        libvirt_error("unable to connect to server at 'KVM-2:49152': No route to host", libvirt.VIR_ERR_SYSTEM_ERROR)
    )
    assert isinstance(error, HostUnreachable)
    assert "ports 49152-49215" in error.plain
    assert error.detail == "unable to connect to server at 'KVM-2:49152': No route to host"


def test_storage_that_is_not_mounted():  # "Input/output error": storage not mounted
    error = translate(libvirt_error("Failed to open file '/mnt/CentOS6.8.qcow2': Input/output error"))
    assert "The storage is probably not mounted there" in error.plain
    assert error.code == "storage"


def test_a_target_name_resolving_to_localhost():  # "requires an FQDN"
    error = translate(
        libvirt_error("internal error hostname on destination resolved to localhost, but migration requires an FQDN")
    )
    assert "resolves to localhost" in error.plain
    assert "/etc/hosts or DNS" in error.plain
    assert error.code == "fqdn"


def test_ssh_login_failure_points_at_the_key():
    error = translate(
        libvirt_error(
            "Cannot recv data: ssh: connect to host kvm02 port 22: Connection refused", libvirt.VIR_ERR_SYSTEM_ERROR
        )
    )
    assert "SSH key" in error.plain and "a login without a password" in error.plain


def test_an_unknown_error_keeps_libvirts_words():
    error = translate(libvirt_error("something new and strange"))
    assert "something new and strange" in error.plain and error.detail == "something new and strange"


@pytest.mark.lab
def test_a_missing_disk_on_a_real_host_reads_as_storage_not_mounted(lab, lab_guest):
    name = lab_guest("kvm01", disk="shared", start=False)
    with lab.connection("kvm01") as conn:
        xml = conn.lookupByName(name).XMLDesc()
        path = xml.split("<source file='", 1)[1].split("'", 1)[0]
        conn.defineXML(xml.replace(path, path + ".missing"))
    with open_host(lab.uri("kvm01")) as conn:
        with pytest.raises(HostError) as caught:
            conn.start(conn.call(lambda: [d for d in conn._conn.listAllDomains() if d.name() == name][0].UUIDString()))
    assert caught.value.code == "storage"
    assert ".missing" in caught.value.detail


def test_a_console_bound_to_an_address_the_target_lacks():
    # As QEMU 7.2 reported it through libvirt 9.0 on the lab, for VNC bound to the source's address.
    error = translate(
        libvirt_error(
            "internal error: process exited while connecting to monitor: qemu-system-x86_64: "
            "-vnc 10.213.187.11:0,audiodev=audio1: Failed to bind socket: Cannot assign requested address"
        )
    )
    assert "could not listen for a console (VNC, SPICE) or serial port" in error.plain
    assert "bound to an address the target host does not have" in error.plain
    assert "Failed to bind socket" in error.detail


def test_a_console_port_taken_on_the_target():
    error = translate(
        libvirt_error(
            "internal error: process exited while connecting to monitor: qemu-system-x86_64: "
            "-vnc 10.0.0.12:1: Failed to bind socket: Address already in use"
        )
    )
    assert "the port it asks for is already taken there" in error.plain


def test_snapshots_that_stop_a_live_move():
    error = translate(
        libvirt_error(
            "Requested operation is not valid: cannot migrate domain with 1 snapshots",
            libvirt.VIR_ERR_OPERATION_INVALID,
        )
    )
    assert "refuses to move a running VM that has snapshots" in error.plain
    assert error.code == "snapshots"


@pytest.mark.parametrize(
    "uri, says, not_says",
    [
        ("qemu+ssh://root@192.0.2.9/system", "could not reach sshd on 192.0.2.9 port 22", "listen_tcp"),
        ("qemu+libssh://root@192.0.2.9:2222/system", "could not reach sshd on 192.0.2.9 port 2222", "listen_tcp"),
        ("qemu+tls://192.0.2.9/system", "listen_tls = 1", "listen_tcp"),
        ("qemu+tcp://192.0.2.9/system", "listen_tcp = 1", "sshd"),
    ],
)
def test_an_unreachable_host_s_advice_matches_its_uri_s_transport(uri, says, not_says):
    from hosts.libvirt.uri import unreachable_message

    message = unreachable_message(uri)
    assert says in message and not_says not in message
