"""Opening a connection to a host, for one piece of work.

``open_host`` refuses to wait on an unreachable host for longer than a
timeout, keeps libvirt's event loop running so keepalive notices a host that
vanishes, and closes the connection afterwards, or, in a process that keeps
connections (``keep_connections``: the worker pool's slots), keeps it open for
the next piece of work on that host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import libvirt
from django.conf import settings

from .. import sshkeys
from .devices import DeviceOps
from .domains import DomainOps
from .errors import HostError, HostUnreachable, translate
from .inventory import InventoryOps
from .migration import MigrationOps
from .storage import StorageOps
from .uri import HostURI, allowed, probe, remote_target, unreachable_message

log = logging.getLogger(__name__)

# libvirt prints every error to stderr unless a handler is registered; the
# errors reach the caller as exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Connection(InventoryOps, DomainOps, DeviceOps, StorageOps, MigrationOps):
    """A libvirt connection for one piece of work. Use ``open_host``.

    Its methods take and return plain data (``types``) and raise only
    ``HostError``; the parts live in inventory, domains, devices, storage and
    migration.
    """

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()


_loop_lock = threading.Lock()
_loop_pid: int | None = None


def _ensure_event_loop() -> None:
    """Run libvirt's event loop in this process, so keepalive works.

    Without a running event loop libvirt sends no keepalives, and a call on a
    connection whose host vanished blocks until the kernel gives up on the
    TCP connection, a quarter of an hour later. RQ forks a work horse per
    job and threads do not survive a fork, hence the check of the pid.
    """
    global _loop_pid
    if _loop_pid == os.getpid():
        return
    with _loop_lock:
        if _loop_pid == os.getpid():
            return
        if _loop_pid is None:
            libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _loop_pid = os.getpid()


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def connection_uri(parsed: HostURI) -> str:
    """The URI kvmweb itself opens: the allowed parts plus kvmweb's own options.

    SSH (whether written ssh or libssh) goes through OpenSSH run with kvmweb's
    own configuration (its key, its known_hosts, unknown or changed host keys
    refused, never a prompt): see sshkeys.ssh_command. TLS takes kvmweb's
    client certificate directory when one is configured.
    """
    base = str(parsed)
    if parsed.transport in ("ssh", "libssh"):
        try:
            command = sshkeys.ssh_command()
        except sshkeys.SSHKeyError as e:
            raise HostError(e.plain, e.detail, code="ssh_key") from None
        options = [("command", str(command)), ("no_tty", "1")]
        base = base.replace(f"qemu+{parsed.transport}://", "qemu+ssh://", 1)
    elif parsed.transport == "tls" and settings.KVMWEB_TLS_DIR:
        options = [("pkipath", settings.KVMWEB_TLS_DIR)]
    else:
        return base
    return base + "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in options)


# -- connections kept between pieces of work -----------------------------------
#
# A process that runs one piece of work after another against the same hosts
# (a worker pool slot: migration after migration) keeps the connections it
# used, instead of logging in again each time: an open is a TCP (and, over
# SSH, a key exchange) round trip or several, and a host's libvirtd that has
# just finished a migration took ~0.5 s to accept a new one in the lab. A kept
# connection is used by one piece of work at a time, proved alive with one
# call before it is handed out, closed after KEEP_IDLE_SECONDS unused, and
# never kept past KEEP_PER_HOST per host. Only what ``open_host``'s callers
# were given back is kept: the URI is still checked at every use (allowed(),
# and the callers' own checks of the host's row, such as its confirmed key).
KEEP_IDLE_SECONDS = 120.0
KEEP_PER_HOST = 3
_keeping = False
_kept: dict[str, list[tuple[libvirt.virConnect, float]]] = {}
_kept_lock = threading.Lock()


def keep_connections(keep: bool = True) -> None:
    """Keep connections open between pieces of work in this process (see above)."""
    global _keeping
    _keeping = keep
    if not keep:
        close_kept()


def close_kept() -> None:
    with _kept_lock:
        idle = [conn for kept in _kept.values() for conn, _ in kept]
        _kept.clear()
    for conn in idle:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _take_kept(uri: str) -> libvirt.virConnect | None:
    """A kept connection to ``uri`` that answers, or None."""
    while True:
        with _kept_lock:
            kept = _kept.get(uri)
            if not kept:
                return None
            conn, since = kept.pop()
        if time.monotonic() - since <= KEEP_IDLE_SECONDS:
            try:
                conn.getLibVersion()  # one round trip: the host still answers on it
                return conn
            except libvirt.libvirtError:
                pass
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _release(connection: Connection) -> None:
    """The end of a piece of work: keep the connection for the next one, or close it."""
    conn = connection._conn
    if _keeping:
        try:
            alive = conn.isAlive() == 1
            key = str(allowed(connection.uri))  # as _open looks it up
        except (libvirt.libvirtError, HostError):
            alive = False
        if alive:
            with _kept_lock:
                kept = _kept.setdefault(key, [])
                if len(kept) < KEEP_PER_HOST:
                    kept.append((conn, time.monotonic()))
                    return
    connection.close()


# Opens of a host abandoned without an answer, by host: at most one each. A host
# that accepts connections and never answers would otherwise cost a thread and
# its sockets per request, for good.
_waiting: dict[object, threading.Thread] = {}
_waiting_lock = threading.Lock()


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """libvirt.open with a deadline.

    The TCP probe catches hosts that do not answer at all; the thread catches
    the rarer case of a host that accepts the connection and then stalls
    (a hung libvirtd, or something else listening on the port). A stalled
    open is abandoned, not killed: its thread finishes on its own, closing
    the connection if it comes after all. While it waits, further opens of
    the same host are refused at once instead of starting threads of their own.
    """
    parsed = allowed(uri)  # checked again at every use, not only when saved
    uri = str(parsed)
    _ensure_event_loop()
    if _keeping:
        kept = _take_kept(uri)
        if kept is not None:
            return kept
    probe(parsed, timeout)
    open_uri = connection_uri(parsed)
    key = remote_target(parsed) or uri
    result: dict[str, object] = {}
    abandoned = False

    def target() -> None:
        try:
            conn = libvirt.open(open_uri)
        except libvirt.libvirtError as e:
            result["error"] = e
        else:
            with _waiting_lock:
                if not abandoned:
                    result["conn"] = conn
                    conn = None
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
        finally:
            with _waiting_lock:
                if _waiting.get(key) is threading.current_thread():
                    del _waiting[key]

    with _waiting_lock:
        earlier = _waiting.get(key)
        if earlier is not None and earlier.is_alive():
            raise HostUnreachable(f"{unreachable_message(uri)} An earlier attempt is still waiting for its answer.")
    thread = threading.Thread(target=target, name=f"libvirt-open {uri}", daemon=True)
    thread.start()
    thread.join(timeout * 2)
    with _waiting_lock:
        stalled = not result
        abandoned = stalled
        if stalled:
            # Only an open abandoned without an answer holds the host back; opens
            # still within their time do not: an evacuation's moves open their
            # source at the same moment.
            _waiting[key] = thread
    if stalled:
        log.warning("libvirt open of %s had no answer within %g s", uri, timeout * 2)
        raise HostUnreachable(unreachable_message(uri))
    error = result.get("error")
    if isinstance(error, libvirt.libvirtError):
        raise _open_error(error, uri)
    conn = result["conn"]
    assert isinstance(conn, libvirt.virConnect)
    if parsed.remote:
        # Notice a host that disappears in the middle of a long operation.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)
    return conn


def _open_error(error: libvirt.libvirtError, uri: str) -> HostError:
    """What a failed open tells the people who see a host's status.

    Not libvirt's own text: for a port where something other than libvirtd
    listens it quotes what answered (a banner, read as a packet length), and
    it tells a closed port from a filtered one. The text goes to the log.
    """
    translated = translate(error, uri)
    log.warning("libvirt open of %s failed: %s", uri, translated.detail)
    # A TLS handshake that fails looks the same from a port where something
    # else listens: the one unreachable message (the log has libvirt's words).
    if (
        isinstance(translated, HostUnreachable)
        or translated.code == "tls"
        or translated.plain.startswith("libvirt reported an error")
    ):
        return HostUnreachable(unreachable_message(uri))
    return HostError(translated.plain, permanent=translated.permanent, code=translated.code)


@contextlib.contextmanager
def open_host(uri: str, timeout: float | None = None) -> Iterator[Connection]:
    """Open a connection to one host for the length of a ``with`` block."""
    if timeout is None:
        timeout = float(settings.KVMWEB_CONNECT_TIMEOUT)
    connection = Connection(uri, _open(uri, timeout))
    try:
        yield connection
    finally:
        _release(connection)


@contextlib.contextmanager
def open_hosts(*uris: str, timeout: float | None = None) -> Iterator[list[Connection]]:
    """Open connections to several hosts side by side, for a ``with`` block.

    Each open waits on the network (and, over SSH, on a handshake), so a
    migration's two hosts are opened at once rather than one after the other.
    If one fails, the others are closed and the first failure, in the order
    given, is raised.
    """
    if timeout is None:
        timeout = float(settings.KVMWEB_CONNECT_TIMEOUT)
    with ThreadPoolExecutor(len(uris), thread_name_prefix="libvirt-open") as pool:
        futures = [pool.submit(_open, uri, timeout) for uri in uris]
    opened = [f.result() if f.exception() is None else None for f in futures]
    connections = [Connection(uri, conn) for uri, conn in zip(uris, opened, strict=True) if conn is not None]
    try:
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        yield connections
    finally:
        for connection in connections:
            _release(connection)
