"""libvirt URIs: their form, and whether the host behind one answers at all.

Plain Python: nothing here needs the libvirt binding.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from .errors import HostError, HostUnreachable, InvalidURI

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22, "libssh2": 22}
KNOWN_DRIVERS = {"qemu", "test", "lxc", "xen", "libxl", "ch", "vbox", "bhyve"}
KNOWN_TRANSPORTS = {"tcp", "tls", "ssh", "libssh", "libssh2", "unix", "ext"}


def validate_uri(uri: str | None) -> str:
    """Check a libvirt URI's form and return it stripped; raise InvalidURI."""
    uri = (uri or "").strip()
    example = "Use a form like qemu+ssh://root@kvm02/system or qemu+tcp://10.0.0.2/system."
    if not uri:
        raise InvalidURI(f"The libvirt URI is empty. {example}")
    if any(c.isspace() for c in uri) or any(ord(c) < 32 for c in uri):
        raise InvalidURI(f"The libvirt URI must not contain spaces. {example}")
    if "://" not in uri:
        raise InvalidURI(f"'{uri}' is not a libvirt URI: it has no '://'. {example}")
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        raise InvalidURI(f"'{uri}' cannot be parsed ({e}). {example}") from None
    try:
        port = parts.port
    except ValueError:
        raise InvalidURI(f"'{uri}' has an impossible port: ports go from 1 to 65535.") from None
    driver, _, transport = parts.scheme.partition("+")
    if driver not in KNOWN_DRIVERS:
        raise InvalidURI(
            f"'{parts.scheme}' is not a libvirt driver; KVM hosts use 'qemu' "
            f"(optionally with +ssh, +tcp or +tls). {example}"
        )
    if transport and transport not in KNOWN_TRANSPORTS:
        raise InvalidURI(f"'{transport}' is not a libvirt transport; use ssh, tcp, tls or unix. {example}")
    if transport in DEFAULT_PORTS and not parts.hostname:
        # The article's "Unable to parse URI qemu+ssh://": a remote transport
        # with no host to go to.
        raise InvalidURI(f"'{uri}' names the {transport} transport but no host. {example}")
    if port is not None and not 0 < port < 65536:
        raise InvalidURI(f"'{uri}' has an impossible port {port}.")
    if driver == "qemu" and parts.path not in ("/system", "/session"):
        raise InvalidURI(f"A qemu URI ends in /system (or /session), not '{parts.path or '(nothing)'}'. {example}")
    if driver == "test" and not parts.path:
        raise InvalidURI("A test URI names a file or /default, as in test:///default.")
    return uri


def remote_target(uri: str) -> tuple[str, int] | None:
    """(host, port) to probe before connecting, or None for local transports."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if not parts.hostname:
        return None
    if not transport:
        transport = "tls"  # libvirt's default for a remote URI without a transport
    if transport not in DEFAULT_PORTS:
        return None
    return parts.hostname, parts.port or DEFAULT_PORTS[transport]


def check_hypervisor_network(
    uri: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
) -> None:
    """Refuse (InvalidURI) a remote host outside KVMWEB_HYPERVISOR_NETWORKS.

    Without that setting any host may be registered. With it, every address
    the host's name resolves to must be in one of the networks, checked at
    registration and again before every connection (a name can come to
    resolve elsewhere). Local URIs (this machine) are not limited.
    """
    if networks is None:
        from django.conf import settings

        networks = settings.KVMWEB_HYPERVISOR_NETWORKS
    target = remote_target(uri)
    if not networks or target is None:
        return
    host, port = target
    allowed = ", ".join(str(n) for n in networks)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InvalidURI(
            f"The host name '{host}' does not resolve, so kvmweb cannot check that it is in the networks "
            f"where hypervisors may be ({allowed})."
        ) from None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    outside = sorted(str(a) for a in addresses if not any(a in n for n in networks))
    if outside:
        raise InvalidURI(
            f"{host} ({', '.join(outside)}) is not in the networks where hypervisors may be ({allowed}). "
            "Ask the administrator, who sets them in KVMWEB_HYPERVISOR_NETWORKS."
        )


def probe(uri: str, timeout: float) -> None:
    """Fail fast (HostUnreachable) when a remote host does not answer at all.

    libvirt.open() has no timeout of its own: against a host that drops
    packets it waits for the kernel's TCP timeout, minutes, which would hang
    a web request. One TCP connect with a deadline tells the same thing in
    seconds.
    """
    try:
        check_hypervisor_network(uri)
    except InvalidURI as e:
        raise HostError(str(e), code="network") from None
    target = remote_target(uri)
    if target is None:
        return
    host, port = target
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HostUnreachable(
            f"The host name '{host}' does not resolve. Check the URI, DNS or /etc/hosts on the machine running kvmweb.",
            str(e),
        ) from None
    last: OSError | None = None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout)
            try:
                s.connect(address)
                return
            except OSError as e:
                last = e
    # One message for a closed port and a filtered one (and no errno beside
    # it): every user sees a host's status, and it must not make kvmweb a
    # port scanner. The log keeps the difference for the administrator.
    log.info("probe of %s port %s failed: %s", host, port, last)
    raise HostUnreachable(unreachable_message(uri))


def unreachable_message(uri: str) -> str:
    host, port = remote_target(uri) or (uri, None)
    where = f"{host} port {port}" if port else host
    return (
        f"kvmweb could not reach libvirtd on {where}. Check that the host is up, that libvirtd "
        "listens there (for qemu+tcp: listen_tcp = 1 and libvirtd --listen), and that no "
        "firewall is in the way."
    )


def reachable(uri: str, timeout: float = 2.0) -> bool:
    """Whether a host's libvirtd accepts TCP connections now (True for local URIs)."""
    try:
        probe(uri, timeout)
        return True
    except HostUnreachable:
        return False
