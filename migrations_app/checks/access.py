"""Whether the hosts can reach each other: kvmweb reaches both, the source
can log in to the target's libvirt itself, the migration data has an address to go to."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING

from hosts import peer_login
from hosts.libvirt import HostError, allowed, open_host
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
