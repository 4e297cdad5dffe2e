"""watch_hosts: libvirt's domain events into the inventory, as they happen.

One process keeps one connection per host (``hosts.libvirt.watch``); every
host's callbacks run on libvirt's one event loop thread and only put plain
events on a queue. This module's loop, in one thread, is the only one that
writes the database: for each event it reads that one domain again on the
host's open connection and stores it (``sync.store_domain``), which resolves
the VM and, once committed, tells the dashboard. A host whose connection
drops is marked offline at once and tried again with backoff (1 s, doubling
to ``max_backoff``); when it answers again its whole inventory is read
through the new connection and stored, as a full sync would. Hosts
registered, removed or given a new URI are noticed every ``rescan`` seconds.
The periodic full sync of the worker stays: it is the safety net.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from . import sync
from .libvirt import ConnectionClosed, DomainEvent, HostError, HostUnreachable, HostWatch, Inventory, watch
from .models import Host, HostStatus

log = logging.getLogger(__name__)


@dataclass
class Connected:
    key: object  # the host's pk, as the watch reports it
    watch: HostWatch
    inventory: Inventory


@dataclass
class Failed:
    key: object
    error: HostError


# What the connecting threads and libvirt's event loop put on the queue.
Item = DomainEvent | ConnectionClosed | Connected | Failed


class Watcher:
    def __init__(
        self,
        timeout: float | None = None,
        rescan: float = 10.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        connectors: int = 4,
        max_attempts: int = 8,
        idle_backoff: float = 600.0,
    ) -> None:
        self.timeout = float(timeout if timeout is not None else settings.KVMWEB_CONNECT_TIMEOUT)
        self.rescan = rescan
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # A host that does not answer is tried max_attempts times with backoff,
        # then only every idle_backoff seconds, or as soon as the worker's
        # periodic sync finds it online: each try of a host that accepts the
        # connection and never answers costs a connection (and, over SSH, an
        # ssh process) for up to twice the connect timeout.
        self.max_attempts = max_attempts
        self.idle_backoff = idle_backoff
        self.failures: dict[object, int] = {}  # host pk -> consecutive failed tries
        self.events: queue.Queue[Item] = queue.Queue()
        self.watches: dict[object, HostWatch] = {}  # host pk -> HostWatch
        self.hosts: dict[object, Host] = {}  # host pk -> Host
        self.connecting: set[object] = set()
        self.untrusted: set[object] = set()  # host pks over SSH whose own host key is not confirmed: never connected to
        # host pk -> events that came before its inventory was stored
        self.early: dict[object, list[DomainEvent]] = {}
        self.retry: dict[object, tuple[float, float]] = {}  # host pk -> (monotonic time of the next try, backoff)
        self.stopping = threading.Event()
        # Opening a connection can take the connect timeout: a few at a time,
        # off the loop, so one host that does not answer delays no other.
        self.pool = ThreadPoolExecutor(max_workers=connectors, thread_name_prefix="watch-connect")

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        next_scan = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() >= next_scan:
                    self.scan()
                    next_scan = time.monotonic() + self.rescan
                self.connect_due()
                try:
                    self.handle(self.next_batch(timeout=0.5))
                except Exception:
                    # The database went away, a host was deleted under us…:
                    # the next event, or the next reconnect, stores it again.
                    log.exception("could not store what the hosts reported")
        finally:
            self.close()

    def stop(self) -> None:
        self.stopping.set()

    def next_batch(self, timeout: float) -> list[Item]:
        """What has arrived: waits up to ``timeout`` for the first item, then takes all there is."""
        try:
            batch = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                return batch

    def handle(self, batch: list[Item]) -> None:
        if not batch:
            return
        close_old_connections()
        # (host pk, uuid) -> latest event: a burst of events is one read
        domains: dict[tuple[object, str], DomainEvent] = {}
        for item in batch:
            if isinstance(item, DomainEvent):
                domains[(item.key, item.uuid)] = item
            else:
                self.refresh(domains)
                domains = {}
                if isinstance(item, Connected):
                    self.on_connected(item)
                elif isinstance(item, Failed):
                    self.on_failed(item.key, item.error)
                elif isinstance(item, ConnectionClosed):
                    self.on_closed(item)
        self.refresh(domains)

    # -- hosts ---------------------------------------------------------------

    def scan(self) -> None:
        close_old_connections()
        hosts: dict[object, Host] = {h.pk: h for h in Host.objects.all()}
        # known_hosts is per host and port, trust is per row (Host.connect_uri):
        # the sync shows such a row's key to confirm; the watcher stays away.
        self.untrusted = {pk for pk, h in hosts.items() if h.host_key_problem() is not None}
        for pk, w in list(self.watches.items()):
            if pk not in hosts or hosts[pk].uri != w.uri or pk in self.untrusted:
                self.drop(pk)
        for pk, host in hosts.items():
            known = self.hosts.get(pk)
            if known is not None and known.uri != host.uri:
                self.retry.pop(pk, None)
                self.failures.pop(pk, None)
            elif self.failures.get(pk, 0) >= self.max_attempts and host.status == HostStatus.ONLINE:
                # The periodic sync reached it: try again now.
                self.retry.pop(pk, None)
                self.failures.pop(pk, None)
        self.hosts = hosts
        for pk in set(self.retry) - hosts.keys():
            del self.retry[pk]

    def connect_due(self) -> None:
        now = time.monotonic()
        for pk, host in self.hosts.items():
            if pk in self.watches or pk in self.connecting or pk in self.untrusted:
                continue
            due, _ = self.retry.get(pk, (0.0, 0.0))
            if now >= due:
                self.connecting.add(pk)
                self.pool.submit(self._connect, pk, host.uri)

    def _connect(self, pk: object, uri: str) -> None:
        """In a pool thread: open the host, register its events, read its inventory."""
        w = None
        try:
            w = watch(pk, uri, self.events.put, self.timeout)
            self.events.put(Connected(pk, w, w.inventory()))
        except HostError as e:
            if w is not None:
                w.close()
            self.events.put(Failed(pk, e))
        except Exception as e:  # a bug must not stop the watching of the other hosts
            log.exception("watching %s failed", uri)
            if w is not None:
                w.close()
            self.events.put(Failed(pk, HostError("kvmweb failed to watch this host.", repr(e), permanent=False)))

    def on_connected(self, item: Connected) -> None:
        self.connecting.discard(item.key)
        host = self.hosts.get(item.key)
        if host is None or host.uri != item.watch.uri:
            item.watch.close()
            return
        self.watches[item.key] = item.watch
        self.retry.pop(item.key, None)
        self.failures.pop(item.key, None)
        result = sync.store(host, item.inventory)
        log.info("watching %s: %s", host.name, result)
        early = self.early.pop(item.key, [])
        self.refresh({(item.key, e.uuid): e for e in early})

    def on_failed(self, pk: object, error: HostError) -> None:
        self.connecting.discard(pk)
        self.early.pop(pk, None)
        host = self.hosts.get(pk)
        if host is not None:
            sync.store(host, error)
        _, delay = self.retry.get(pk, (0.0, 0.0))
        delay = min(max(delay * 2, self.min_backoff), self.max_backoff)
        self.failures[pk] = self.failures.get(pk, 0) + 1
        if self.failures[pk] >= self.max_attempts:
            delay = max(delay, self.idle_backoff)
        self.retry[pk] = (time.monotonic() + delay, delay)

    def on_closed(self, item: ConnectionClosed) -> None:
        w = self.watches.pop(item.key, None)
        if w is None:
            return
        w.close()
        host = self.hosts.get(item.key)
        name = host.name if host is not None else w.uri
        log.warning("lost the connection to %s (%s)", name, item.reason)
        error = HostUnreachable(
            f"The connection to libvirtd on {name} was lost ({item.reason}). kvmweb is trying to reconnect.",
            item.reason,
        )
        # Marked offline at once; tried again at once, then with backoff.
        self.on_failed(item.key, error)
        self.retry[item.key] = (time.monotonic(), 0.0)

    def drop(self, pk: object) -> None:
        w = self.watches.pop(pk, None)
        if w is not None:
            w.close()

    # -- domains -------------------------------------------------------------

    def refresh(self, events: dict[tuple[object, str], DomainEvent]) -> None:
        for (pk, uuid), event in events.items():
            w = self.watches.get(pk)
            if w is None:
                if pk in self.connecting:
                    self.early.setdefault(pk, []).append(event)
                continue
            try:
                info = w.domain(uuid)
            except HostError as e:
                # The connection is going: its close callback follows.
                log.info("could not read %s on %s: %s", event.name, w.uri, e.plain)
                continue
            sync.store_domain(self.hosts[pk], uuid, info)
            # How late the inventory is, for whoever measures it (KVMWEB_LOG_LEVEL=DEBUG).
            log.debug(
                "stored %s (%s) on %s %.3f s after libvirt reported it",
                event.name,
                event.event,
                w.uri,
                time.time() - event.received,
            )

    def close(self) -> None:
        for pk in list(self.watches):
            self.drop(pk)
        self.pool.shutdown(wait=False, cancel_futures=True)
