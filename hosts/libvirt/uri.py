"""Host URIs: the allowlist every URI passes before libvirt sees it, and
whether the host behind one answers at all.

A URI reaches libvirt only as kvmweb rebuilds it from parts that passed the
allowlist (``HostURI``): driver ``qemu``, path ``/system``, a host name, the
``ssh``, ``libssh`` or ``tls`` transport (``tcp`` with KVMWEB_ALLOW_TCP), no
password, no query, no fragment; libvirt's ``test`` driver only with
KVMWEB_ALLOW_TEST_DRIVER. It is judged after decoding it the way libvirt
does (percent-encoding in every part, parameter names in any case,
repeated). The checks run again wherever a URI is used: saving, sync,
pre-flight, the destination of a migration.

Plain Python: nothing here needs the libvirt binding.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings

from .errors import HostError, HostUnreachable, InvalidURI

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22}

ALLOWED_TRANSPORTS = ("ssh", "libssh", "tls")
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# What each query parameter would do, for the message that refuses it.
_PARAM_DANGER = {
    "command": "it names a program kvmweb's server would run",
    "netcat": "it names a program the host would run",
    "socket": "it names a socket path on the host",
    "keyfile": "it names a private key file kvmweb's server would read",
    "known_hosts": "it names a file kvmweb's server would read and write",
    "known_hosts_verify": "it would turn host key checks off",
    "no_verify": "it would turn certificate or host key checks off",
    "pkipath": "it names certificate files kvmweb's server would read",
    "tls_priority": "it would change the TLS ciphers",
    "sshauth": "it changes how kvmweb logs in",
    "name": "it makes the host's libvirtd open another URI",
    "mode": "it changes which daemon the host connects to",
    "proxy": "it changes which program the host runs",
    "no_tty": "kvmweb sets it itself",
}


@dataclass(frozen=True)
class HostURI:
    """A URI that passed the allowlist, in parts; ``str()`` is its canonical form."""

    driver: str
    transport: str
    host: str
    port: int | None
    user: str
    path: str = "/system"

    def __str__(self) -> str:
        if self.driver == "test":
            return f"test://{self.path}"
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.driver}+{self.transport}://{user}{host}{port}/system"

    @property
    def remote(self) -> bool:
        return self.driver != "test"


def _example(host: str = "kvm02") -> str:
    return f"Write it as qemu+ssh://root@{host}/system (or qemu+tls://{host}/system)."


def _decode_params(query: str) -> list[str]:
    """The query's parameters as libvirt reads them: split on & and ;, percent-decoded, names lower-cased."""
    names = []
    for piece in re.split(r"[&;]", query):
        if not piece:
            continue
        name = unquote(piece.partition("=")[0].replace("+", " ")).strip().lower()
        names.append(name or "(empty name)")
    return names


def _check_host(host: str, example_host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise InvalidURI(f"'{host}' is not an IPv6 address. {_example()}") from None
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidURI(
            f"The host name '{host}' is not a plain DNS name or IP address (letters, digits, '-' and '.' only). "
            f"{_example(example_host)}"
        )
    if labels[-1].isdigit():
        raise InvalidURI(f"'{host}' is neither a host name nor an IPv4 address. {_example()}")
    return host.rstrip(".")


def _check_test_uri(raw: str, plus: str, authority: str, path: str) -> HostURI:

    if not settings.KVMWEB_ALLOW_TEST_DRIVER:
        raise InvalidURI(
            f"libvirt's test driver is refused here (it is for tests; KVMWEB_ALLOW_TEST_DRIVER). {_example()}"
        )
    if not plus and not authority:
        if path == "/default":
            return HostURI("test", "", "", None, "", path)
        # Test-driver files kvmweb itself wrote (the tests', the demo's): only
        # below KVMWEB_TEST_DRIVER_DIR, never a file named from outside.
        base = settings.KVMWEB_TEST_DRIVER_DIR
        if base and re.fullmatch(r"/[A-Za-z0-9_./-]+\.xml", path) and "/." not in path:
            real, root = os.path.realpath(path), os.path.realpath(base)
            if real.startswith(root + os.sep) and os.path.isfile(real):
                return HostURI("test", "", "", None, "", real)
    raise InvalidURI(
        f"The only test URI kvmweb accepts is test:///default, not '{raw}': a test URI naming a file or "
        "another host would make libvirt read that file."
    )


def check_uri(uri: str | None) -> HostURI:
    """Judge a host URI against the allowlist; return it as a HostURI or raise InvalidURI.

    Decoded the way libvirt decodes it (percent-encoding in every part,
    parameter names in any case, repeated), then judged: driver qemu, path
    exactly /system, a host, transport ssh, libssh or tls (tcp only with
    KVMWEB_ALLOW_TCP), no password, no query, no fragment. The test driver,
    with KVMWEB_ALLOW_TEST_DRIVER, is test:///default and nothing else.
    """
    raw = (uri or "").strip()
    if not raw:
        raise InvalidURI(f"The libvirt URI is empty. {_example()}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise InvalidURI(f"The libvirt URI must not contain spaces or control characters. {_example()}")
    if "\\" in raw:
        raise InvalidURI(f"The libvirt URI must not contain '\\'. {_example()}")
    if "://" not in raw:
        raise InvalidURI(f"'{raw}' is not a libvirt URI: it has no '://'. {_example()}")
    rest, hash_, _fragment = raw.partition("#")
    rest, question, query = rest.partition("?")
    scheme, _, after = rest.partition("://")
    authority, slash, path = after.partition("/")
    path = slash + path
    userinfo, at, hostport = authority.rpartition("@")
    host_guess = unquote(hostport).split(":")[0] if hostport and not hostport.startswith("[") else "kvm02"
    if not _HOST_LABEL.fullmatch(host_guess.split(".")[0] or "-"):
        host_guess = "kvm02"
    if question:
        params = _decode_params(query)
        if params:
            why = "; ".join(f"'{p}': {_PARAM_DANGER.get(p, 'kvmweb takes no options from a URI')}" for p in params)
            raise InvalidURI(
                f"The part after '?' is not allowed ({why}). kvmweb adds the options it needs "
                f"(its SSH key, its known_hosts, its TLS certificates) from its own configuration. "
                f"{_example(host_guess)}"
            )
        raise InvalidURI(f"Remove the '?' at the end. {_example(host_guess)}")
    if hash_:
        raise InvalidURI(f"The part after '#' is not allowed. {_example(host_guess)}")

    scheme = unquote(scheme).lower()
    driver, plus, transport = scheme.partition("+")
    if driver == "test":
        return _check_test_uri(raw, plus, authority, unquote(path))
    if driver != "qemu":
        raise InvalidURI(
            f"'{driver or raw}' is not allowed as a libvirt driver: kvmweb manages KVM hosts, "
            f"driver 'qemu'. {_example()}"
        )
    if not plus or not transport:
        raise InvalidURI(
            f"Name the transport: qemu+ssh, qemu+libssh or qemu+tls (a URI without one, or a local "
            f"qemu:///system, is not allowed). {_example(host_guess)}"
        )
    if transport == "tcp":
        if not settings.KVMWEB_ALLOW_TCP:
            raise InvalidURI(
                'qemu+tcp is refused: it has no encryption and, with auth_tcp = "none", no login. '
                f"{_example(host_guess)} Set KVMWEB_ALLOW_TCP=true only for hosts whose libvirtd demands SASL, "
                "or for a lab."
            )
    elif transport not in ALLOWED_TRANSPORTS:
        raise InvalidURI(f"The transport '{transport}' is not allowed; use ssh, libssh or tls. {_example(host_guess)}")
    user = ""
    if at:
        name, colon, _password = unquote(userinfo).partition(":")
        if colon:
            raise InvalidURI(
                "A password does not belong in the URI: kvmweb logs in with its SSH key or TLS certificate. "
                f"{_example(host_guess)}"
            )
        if not _USER.fullmatch(name):
            raise InvalidURI(f"'{name}' is not a user name (letters, digits, '_', '.', '-'). {_example(host_guess)}")
        user = name
    hostport = unquote(hostport)
    if hostport.startswith("["):
        host, bracket, port_text = hostport.partition("]")
        host += bracket
        port_text = port_text[1:] if port_text.startswith(":") else port_text
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise InvalidURI(f"'{raw}' names the {transport} transport but no host. {_example()}")
    host = _check_host(host.lower(), host_guess)
    port = None
    if port_text or hostport.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidURI(f"'{port_text}' is not a port: ports go from 1 to 65535. {_example(host_guess)}")
        port = int(port_text)
    if unquote(path) != "/system":
        raise InvalidURI(
            f"The path must be exactly /system, not '{unquote(path) or '(nothing)'}'. {_example(host_guess)}"
        )
    return HostURI("qemu", transport, host, port, user)


def validate_uri(uri: str | None) -> str:
    """The canonical form of an allowed URI; raise InvalidURI (see check_uri)."""
    return str(check_uri(uri))


def refused(error: object, uri: object = "") -> HostError:
    """The HostError for a URI the allowlist refuses now (a row saved before it existed)."""
    return HostError(
        f"kvmweb will not connect with this URI any more: {error}",
        str(uri),
        code="uri_refused",
    )


def allowed(uri: str) -> HostURI:
    """check_uri, raising HostError (for code that connects) instead of InvalidURI."""
    try:
        return check_uri(uri)
    except InvalidURI as e:
        raise refused(e, uri) from None


def remote_target(uri: str | HostURI) -> tuple[str, int] | None:
    """(host, port) to probe before connecting, or None for the test driver."""
    parsed = uri if isinstance(uri, HostURI) else allowed(uri)
    if not parsed.remote:
        return None
    return parsed.host, parsed.port or DEFAULT_PORTS[parsed.transport]


def check_hypervisor_network(
    uri: str | HostURI, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
) -> None:
    """Refuse (InvalidURI) a remote host outside KVMWEB_HYPERVISOR_NETWORKS.

    Without that setting any host may be registered. With it, every address
    the host's name resolves to must be in one of the networks, checked at
    registration and again before every connection (a name can come to
    resolve elsewhere). Local URIs (this machine) are not limited.
    """
    if networks is None:
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


def probe(uri: str | HostURI, timeout: float) -> None:
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
    last = None
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


def unreachable_message(uri: str | HostURI) -> str:
    """The one message for every way a host can fail to answer before kvmweb is
    logged in: a closed port, a filtered one, something else listening there
    (no SSH host key to fetch, no TLS handshake). Telling them apart would make
    host registration a port scanner; the log keeps what was seen."""
    parsed: HostURI | None = None
    if isinstance(uri, HostURI):
        parsed = uri
    else:
        with contextlib.suppress(HostError):
            parsed = allowed(uri)
    host, port = remote_target(parsed or uri) or (uri, None)
    where = f"{host} port {port}" if port else host
    transport = parsed.transport if parsed is not None else ""
    if transport in ("ssh", "libssh"):
        how = "sshd answers there and offers its host key, kvmweb's key may log in"
    elif transport == "tls":
        how = (
            "listen_tls = 1 and libvirtd --listen; KVMWEB_TLS_DIR holds cacert.pem, clientcert.pem and "
            "clientkey.pem signed by the hosts' CA and the host's certificate names the host as the URI does"
        )
    else:
        how = "listen_tcp = 1 and libvirtd --listen"
    if transport in ("ssh", "libssh"):
        return (
            f"kvmweb could not reach sshd on {where}. Check that the host is up, that {how}, "
            "and that no firewall is in the way."
        )
    return (
        f"kvmweb could not reach libvirtd on {where}. Check that the host is up, that libvirtd "
        f"listens there ({how}), and that no firewall is in the way."
    )


def reachable(uri: str | HostURI, timeout: float = 2.0) -> bool:
    """Whether a host's libvirtd accepts TCP connections now (True for local URIs)."""
    try:
        probe(uri, timeout)
        return True
    except HostError:  # unreachable, or a URI kvmweb no longer connects with
        return False
