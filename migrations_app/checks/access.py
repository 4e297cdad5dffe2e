"""Whether the hosts can reach each other: kvmweb reaches both, the source
can log in to the target's libvirt itself, the migration data has an address to go to."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING

from hosts import peer_login
from hosts.libvirt import HostError, allowed, certificate_problem, open_host
from hosts.models import Host

from ..models import Mode, StorageMode
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def connect(stack: contextlib.ExitStack, checks: Checks, name: str, host: Host) -> Connection | None:
    """An open connection to ``host`` for the checks (closed with ``stack``), or None when it does not answer."""
    role = "source" if name.startswith("source") else "target"
    try:
        conn = stack.enter_context(open_host(host.connect_uri()))
    except HostError as e:
        checks.add(name, FAIL, f"The {role} host {host.name} cannot be reached: {e.plain}", e.detail)
        return None
    checks.add(name, PASS, f"The {role} host {host.name} answers.")
    return conn


def check_hostname(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    if v.mode != Mode.LIVE and v.storage != StorageMode.COPY:
        return
    # The migration data goes to the target's own address (Host.address), not to
    # the name it reports: that works even where the target's name resolves to
    # 127.0.0.1 there, which libvirt would refuse ("hostname on destination
    # resolved to localhost").
    address, reported = v.target.address(), target.hostname()
    if address:
        checks.add(
            "target_hostname",
            PASS,
            f"The target calls itself {reported}; the migration data goes straight to "
            f"{address}, so that name need not resolve on the source.",
        )
        return
    if reported.split(".")[0] in ("localhost", "") or _resolves_to_loopback(reported):
        checks.add(
            "target_hostname",
            FAIL,
            f"The target's host name '{reported}' resolves to localhost, so the source would "
            "try to send the VM to itself. Give the target a real name in /etc/hosts or DNS "
            "on both hosts, or register it with its IP address in the URI.",
        )
    else:
        checks.add(
            "target_hostname",
            WARN,
            f"The target calls itself '{reported}'. The source host must resolve that name to "
            "the target's address (check /etc/hosts or DNS there); kvmweb cannot check it.",
        )


def check_migration_tls(
    checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
) -> None:
    """A live migration between two hosts registered over TLS sends its stream
    over TLS (engine.live.tls_stream): the target's certificate must name the
    address the data goes to, or QEMU gives up with a bare "Cannot read from TLS channel"."""
    src_host, dst_host = v.source, v.target
    if v.mode != Mode.LIVE or not (src_host.wants_tls_migrations and dst_host.wants_tls_migrations):
        return
    address = dst_host.address()
    if not address:
        return
    problem = certificate_problem(dst_host.uri, address)
    off = f"or turn off 'encrypt migrations (TLS)' for {dst_host.name} to send the stream in clear"
    if problem is None:
        checks.add(
            "migration_tls",
            PASS,
            f"The migration stream goes over TLS: {dst_host.name}'s certificate is signed by the CA kvmweb "
            f"trusts and names {address}, where the data goes.",
        )
    elif problem[0] == "name":
        checks.add(
            "migration_tls",
            FAIL,
            f"The migration stream would go over TLS to {address}, but {dst_host.name}'s certificate does not "
            f"name that address, so the source would refuse it. Issue {dst_host.name} a certificate with "
            f"{address} among its subject alternative names (in /etc/pki/qemu/server-cert.pem and "
            f"/etc/pki/libvirt/servercert.pem), {off}.",
            problem[1],
        )
    elif problem[0] == "trust":
        checks.add(
            "migration_tls",
            FAIL,
            f"The migration stream would go over TLS, but {dst_host.name}'s certificate is not one the hosts' CA "
            f"signed (or it expired), so the source would refuse it. Renew it from the CA in /etc/pki/CA, {off}.",
            problem[1],
        )
    else:
        checks.add(
            "migration_tls",
            WARN,
            f"The migration stream goes over TLS, but kvmweb could not look at {dst_host.name}'s certificate "
            f"first. If the migration fails at the start, check /etc/pki/qemu on both hosts, {off}.",
            problem[1],
        )


def _resolves_to_loopback(name: str) -> bool:
    try:
        return any(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(name, None))
    except (socket.gaierror, ValueError):
        return False


def check_peer_login(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    """Whether the source host can log in to the target's libvirt on its own (with its root's SSH key
    or its TLS client certificate), as a peer-to-peer migration needs: asked of the source host itself,
    before anything starts, so a missing key fails the check rather than the migration."""
    if v.mode != Mode.LIVE or not dom.active or not allowed(v.source.uri).remote:
        return  # nothing to ask of libvirt's test driver
    ago = peer_login.proved_ago(v.source.uri, v.target.uri)
    if ago is not None:
        checks.add(
            "peer_login",
            PASS,
            f"{v.source.name} can open {v.target.name}'s libvirt itself: it did {ago:.0f} s ago "
            f"(kvmweb asks again after {peer_login.PEER_PROOF_SECONDS // 60} minutes).",
        )
        return
    problem = source.probe_peer(v.uuid, v.target.uri)
    if problem is None:
        peer_login.remember(v.source.uri, v.target.uri)
        checks.add("peer_login", PASS, f"{v.source.name} can open {v.target.name}'s libvirt itself.")
    else:
        peer_login.forget(v.source.uri, v.target.uri)
        checks.add("peer_login", FAIL, problem.plain, problem.detail)
