"""Errors that leave the seam, and the one place libvirt's errors become them.

``HostError`` and its kin are plain exceptions, importable without the libvirt
binding. ``translate`` and ``translated`` turn a ``libvirt.libvirtError`` into a
``HostError`` that says in plain words what is wrong and what to do, keeping
libvirt's own text beside it; they load the binding only when called.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])


# A HostError's code when the source host could not log in to the target's
# libvirt itself (peer-to-peer, over SSH or TLS): see migration.peer_error.
PEER_SSH, PEER_TLS = "peer_ssh", "peer_tls"
PEER_LOGIN_CODES = (PEER_SSH, PEER_TLS)


class HostError(Exception):
    """A libvirt operation failed.

    ``plain`` says what is wrong and what to do; ``detail`` is libvirt's own
    text. ``permanent`` is False when trying again later may succeed (the host
    was unreachable, the daemon restarting), True when it will not until
    someone changes something.
    """

    def __init__(self, plain: str, detail: str = "", *, permanent: bool = True, code: str | None = None) -> None:
        super().__init__(plain)
        self.plain = plain
        self.detail = detail
        self.permanent = permanent
        self.code = code

    def __str__(self) -> str:
        return self.plain


class HostUnreachable(HostError):
    def __init__(self, plain: str, detail: str = "") -> None:
        super().__init__(plain, detail, permanent=False, code="unreachable")


class VolumeStreamError(HostError):
    """Reading or writing a volume's data stream failed."""


class InvalidURI(ValueError):
    """A libvirt URI that cannot be right, whatever the state of the network."""


def translate(error: BaseException, uri: str = "") -> HostError:
    """Turn a libvirt.libvirtError into a HostError with a plain-words message."""
    if isinstance(error, HostError):
        return error
    import libvirt  # the binding, only when called: this module imports without it (see above)

    assert isinstance(error, libvirt.libvirtError)
    detail = error.get_error_message() or str(error)
    code = error.get_error_code()
    lower = detail.lower()
    where = f" ({uri})" if uri else ""

    if "resolved to localhost" in lower or "requires an fqdn" in lower:
        return HostError(
            "The target host's name resolves to localhost, so the source cannot reach it "
            "for the migration. Give each host a name that resolves to its real address "
            "on both hosts (/etc/hosts or DNS).",
            detail,
            code="fqdn",
        )
    if "unable to parse uri" in lower or code == libvirt.VIR_ERR_INVALID_ARG and "uri" in lower:
        return HostError(
            f"libvirt cannot parse the URI{where}. Use a form like qemu+ssh://root@kvm02/system.",
            detail,
            code="uri",
        )
    # ssh's warning about a changed host key is longer than the 1 KiB of
    # stderr libvirt keeps, which it then reports as EOVERFLOW.
    overflow = "cannot recv data: value too large for defined data type" in lower
    if "host key verification failed" in lower or "identification has changed" in lower or overflow:
        return HostError(
            f"The host{where} offered an SSH host key that no operator confirmed (a new host, or its key "
            "changed). kvmweb does not connect until someone who has checked the key on the host confirms it "
            "on the host's page.",
            detail,
            code="host_key",
        )
    if any(word in lower for word in ("certificate", "cacert.pem", "clientkey.pem", "gnutls", "tls handshake")):
        return HostError(
            f"The TLS connection to the host{where} failed. Check that KVMWEB_TLS_DIR holds cacert.pem, "
            "clientcert.pem and clientkey.pem signed by the hosts' CA, and that the host's server certificate "
            "names the host as the URI does.",
            detail,
            code="tls",
        )
    if (
        code == libvirt.VIR_ERR_AUTH_FAILED
        or "authentication" in lower
        or "permission denied" in lower
        or "access denied" in lower
    ):
        return HostError(
            f"The host{where} refused kvmweb's login. For qemu+ssh, add kvmweb's SSH key (`python manage.py "
            "ssh_public_key` prints it) to that user's ~/.ssh/authorized_keys on the host; for qemu+tls, "
            "check the client certificate.",
            detail,
            code="auth",
        )
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC) and (
        "connect" in lower
        or "no route to host" in lower
        or "connection refused" in lower
        or "unable to connect" in lower
    ):
        return HostUnreachable(
            f"The host{where} cannot be reached: {_reach_hint(lower)}",
            detail,
        )
    if "failed to bind socket" in lower:
        if "address already in use" in lower:
            why = "the port it asks for is already taken there (by another VM's console, say)"
            fix = "Let libvirt choose the port (autoport), or free the port on the target."
        else:
            why = "it is bound to an address the target host does not have"
            fix = (
                "Make it listen on 0.0.0.0 or on a libvirt network; kvmweb adapts consoles bound to "
                "the source's own address, and to KVMWEB_LISTEN_ADDRESS if that is set."
            )
        return HostError(
            f"QEMU could not listen for a console (VNC, SPICE) or serial port of the VM on the target: {why}. {fix}",
            detail,
            code="bind",
        )
    if re.search(r"cannot migrate domain with \d+ snapshots?", lower):
        return HostError(
            "libvirt refuses to move a running VM that has snapshots. Migrate it cold (kvmweb moves the "
            "snapshots with it), or delete the snapshots first.",
            detail,
            code="snapshots",
        )
    if "input/output error" in lower or (
        ("no such file or directory" in lower or "cannot access storage file" in lower) and "/" in detail
    ):
        return HostError(
            "A disk image cannot be read on the host. The storage is probably not mounted "
            "there: mount it (and check it is the same share on both hosts), then try again.",
            detail,
            code="storage",
        )
    if code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in lower:
        return HostError(
            "The virtual machine is not running, so it cannot be migrated live. Start it, or use a cold migration.",
            detail,
            code="not_running",
        )
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return HostError(
            "The virtual machine does not exist on that host (any more). Refresh the inventory.",
            detail,
            code="no_domain",
        )
    return HostError(f"libvirt reported an error{where}: {detail}", detail, code=str(code))


def _reach_hint(lower: str) -> str:
    if "ssh" in lower:
        return (
            "logging in over SSH failed. Check that sshd runs there and that the SSH key of the "
            "user running kvmweb is installed for that user on the host (a login without a "
            "password); for a migration, the source host needs the same to the target."
        )
    if re.search(r":49(1[5-9]\d|2[01]\d)\b", lower):
        return (
            "the source could not open the migration data connection to the target (ports "
            "49152-49215). Open those ports on the target's firewall, and check the route between "
            "the hosts."
        )
    if "no route to host" in lower:
        return (
            "there is no route to it. Check the network, and that the host name resolves to "
            "the right address on both hosts."
        )
    if "connection refused" in lower:
        return "it refused the connection. Check that libvirtd is running and listening."
    if "timed out" in lower:
        return "it did not answer in time. Check that it is up."
    return "check that it is up, that libvirtd runs there, and the network between them."


@contextlib.contextmanager
def translating(uri: str) -> Iterator[None]:
    """Within the block, a libvirt error leaves as a HostError."""
    import libvirt  # the binding, only when called: this module imports without it (see above)

    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, uri) from None


@overload
def translated(method: F) -> F: ...
@overload
def translated(*, absent: tuple[int, ...] = (), default: Any = None) -> Callable[[F], F]: ...


def translated(method: Any = None, *, absent: tuple[int, ...] = (), default: Any = None) -> Any:
    """Method decorator: libvirt errors leave the method as HostError.

    With ``absent`` (libvirt error numbers such as VIR_ERR_NO_DOMAIN), those
    errors mean "not there" and the method returns ``default`` instead. The
    object's ``uri`` names the host in the message.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            import libvirt  # the binding, only when called: this module imports without it (see above)

            try:
                return fn(self, *args, **kwargs)
            except libvirt.libvirtError as e:
                if e.get_error_code() in absent:
                    return default
                raise translate(e, self.uri) from None

        return wrapper  # type: ignore[return-value]

    if method is not None:
        return decorate(method)
    return decorate
