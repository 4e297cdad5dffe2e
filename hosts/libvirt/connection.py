"""Opening a connection to a host, for one piece of work.

``open_host`` refuses to wait on an unreachable host for longer than a
timeout, keeps libvirt's event loop running so keepalive notices a host that
vanishes, and closes the connection afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import libvirt

from .domains import DomainOps
from .errors import HostUnreachable, translate
from .inventory import InventoryOps
from .migration import MigrationOps
from .storage import StorageOps
from .uri import probe, remote_target

# libvirt prints every error to stderr unless a handler is registered; the
# errors reach the caller as exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Connection(InventoryOps, DomainOps, StorageOps, MigrationOps):
    """A libvirt connection for one piece of work. Use ``open_host``.

    Its methods take and return plain data (``types``) and raise only
    ``HostError``; the parts live in inventory, domains, storage and migration.
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


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """libvirt.open with a deadline.

    The TCP probe catches hosts that do not answer at all; the thread catches
    the rarer case of a host that accepts the connection and then stalls
    (a hung libvirtd). A stalled open is abandoned, not killed: its thread
    finishes or times out on its own.
    """
    _ensure_event_loop()
    probe(uri, timeout)
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as e:
            result["error"] = e

    thread = threading.Thread(target=target, name=f"libvirt-open {uri}", daemon=True)
    thread.start()
    thread.join(timeout * 2)
    if thread.is_alive():
        raise HostUnreachable(
            f"libvirtd at {uri} accepted the connection but did not answer within "
            f"{timeout * 2:g} s. It may be overloaded or hung: check it on the host.",
        )
    error = result.get("error")
    if isinstance(error, libvirt.libvirtError):
        raise translate(error, uri)
    conn = result["conn"]
    assert isinstance(conn, libvirt.virConnect)
    if remote_target(uri) is not None:
        # Notice a host that disappears in the middle of a long operation.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)
    return conn


@contextlib.contextmanager
def open_host(uri: str, timeout: float | None = None) -> Iterator[Connection]:
    """Open a connection to one host for the length of a ``with`` block."""
    if timeout is None:
        from django.conf import settings

        timeout = float(settings.KVMWEB_CONNECT_TIMEOUT)
    connection = Connection(uri, _open(uri, timeout))
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def open_hosts(*uris: str, timeout: float | None = None) -> Iterator[list[Connection]]:
    """Open connections to several hosts side by side, for a ``with`` block.

    Each open waits on the network (and, over SSH, on a handshake), so a
    migration's two hosts are opened at once rather than one after the other.
    If one fails, the others are closed and the first failure, in the order
    given, is raised.
    """
    if timeout is None:
        from django.conf import settings

        timeout = float(settings.KVMWEB_CONNECT_TIMEOUT)
    with ThreadPoolExecutor(len(uris), thread_name_prefix="libvirt-open") as pool:
        futures = [pool.submit(_open, uri, timeout) for uri in uris]
    opened = [f.result() if f.exception() is None else None for f in futures]
    connections = [Connection(uri, conn) for uri, conn in zip(uris, opened, strict=True) if conn is not None]
    try:
        for future in futures:
            if future.exception() is not None:
                raise future.exception()
        yield connections
    finally:
        for connection in connections:
            connection.close()
