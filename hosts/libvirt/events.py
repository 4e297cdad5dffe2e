"""A long-lived connection per host that reports libvirt's domain events.

``watch(key, uri, deliver)`` opens a host, registers the lifecycle (started,
stopped, defined, undefined, suspended, resumed, migrated…) and job-completed
callbacks and a close callback, and calls ``deliver`` with a plain
``DomainEvent`` or ``ConnectionClosed``. Every host's callbacks run on the one
libvirt event loop thread of the process (``connection._ensure_event_loop``),
so ``deliver`` must be quick and thread-safe: put the event on a queue.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from .connection import Connection, _open
from .errors import translate
from .types import DomainInfo

LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

# The details that say a migration caused the event, by event.
MIGRATED = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
}

CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "eof",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "client",
}


@dataclass(frozen=True)
class DomainEvent:
    key: object  # what the caller named the host by
    uuid: str
    name: str
    event: str  # a LIFECYCLE value, or "job_completed"
    migrated: bool  # the event is part of a migration
    received: float  # time.time() when libvirt delivered it


@dataclass(frozen=True)
class ConnectionClosed:
    key: object
    reason: str  # a CLOSE_REASONS value


Deliver = Callable[[DomainEvent | ConnectionClosed], None]


class HostWatch(Connection):
    """A Connection that stays open and reports what happens to the host's domains."""

    def __init__(self, key: object, uri: str, conn: libvirt.virConnect, deliver: Deliver) -> None:
        super().__init__(uri, conn)
        self.key = key
        self._deliver = deliver
        self._callbacks: list[int] = []
        self._closed = False
        try:
            self._callbacks.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
            )
            self._callbacks.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed, None
                )
            )
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            self.close()
            raise

    def _on_lifecycle(self, _conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object) -> None:
        self._deliver(
            DomainEvent(
                key=self.key,
                uuid=dom.UUIDString(),
                name=dom.name(),
                event=LIFECYCLE.get(event, "unknown"),
                migrated=MIGRATED.get(event) == detail,
                received=time.time(),
            )
        )

    def _on_job_completed(self, _conn: object, dom: libvirt.virDomain, _params: object, _opaque: object) -> None:
        self._deliver(
            DomainEvent(
                key=self.key,
                uuid=dom.UUIDString(),
                name=dom.name(),
                event="job_completed",
                migrated=False,
                received=time.time(),
            )
        )

    def _on_close(self, _conn: object, reason: int, _opaque: object) -> None:
        if not self._closed:
            self._deliver(ConnectionClosed(self.key, CLOSE_REASONS.get(reason, "error")))

    def domain(self, uuid: str) -> DomainInfo | None:
        """The domain as it is now, or None if it is no longer defined here.
        Its disks carry no pool sizes: those come with a full inventory."""
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            return self._domain_info(dom, {})
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(e, self.uri) from None

    def close(self) -> None:
        self._closed = True
        for callback in self._callbacks:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.domainEventDeregisterAny(callback)
        self._callbacks.clear()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.unregisterCloseCallback()
        super().close()


def watch(key: object, uri: str, deliver: Deliver, timeout: float) -> HostWatch:
    """Open ``uri`` and start reporting its domain events to ``deliver``."""
    return HostWatch(key, uri, _open(uri, timeout), deliver)
