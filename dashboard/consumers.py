"""The dashboard's socket and each VM page's socket.

Both refuse anonymous users and users without a role (closed with 4403), send
the full current state first (a page that reconnects never shows stale data),
then forward what ``publishing`` sends to their group.
"""

import time
from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

from core.websocket import SessionBoundConsumer
from hosts.models import Domain
from migrations_app.consumers import CLOSE_NOT_ALLOWED, CLOSE_NOT_FOUND, Coalescer, access, is_stale
from migrations_app.models import ACTIVE, FINISHED, Migration, Status

from .counts import HostsMessage, host_counts, hosts_message
from .publishing import DASHBOARD_GROUP, domain_group


class DashboardConsumer(SessionBoundConsumer):
    """``/ws/dashboard/``: the running migrations and the hosts' counts, then changes.

    Messages: ``dashboard.state`` (first: ``migrations``, ``hosts`` with
    ``hosts_summary``, and the split-brain ``alarms``), ``dashboard.domain``
    (one VM's new state after an inventory change, or ``{"id", "removed": true}``),
    ``dashboard.migration`` (one migration's state, coalesced per migration)
    and ``dashboard.hosts`` (the hosts' counts again, after a migration
    succeeded, with the VM it ``moved``, or after the inventory changed).
    """

    min_interval = 0.2
    active_limit = 50

    async def connect(self) -> None:
        self.joined = False
        self.last: dict[int, Mapping[str, Any]] = {}
        self.coalescer = Coalescer(self.send_json, self.min_interval)
        may_watch, _ = await database_sync_to_async(access)(self.scope.get("user"))
        if not may_watch:
            await self.close(code=CLOSE_NOT_ALLOWED)
            return
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        await self.send_json({"type": "dashboard.state", **await database_sync_to_async(self._current_state)()})

    async def disconnect(self, code: int) -> None:
        self.coalescer.stop()
        if self.joined:
            await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def dashboard_update(self, event: dict[str, Any]) -> None:
        state = event.get("migration")
        if state is None:
            # Anything else published to the dashboard is an inventory change:
            # each VM that changed at once (for the alarms), the hosts' counts coalesced.
            inventory = event.get("inventory") or {}
            for domain in inventory.get("domains", ()):
                await self.send_json({"type": "dashboard.domain", "domain": domain, "sent_at": inventory["sent_at"]})
            for pk in inventory.get("removed", ()):
                await self.send_json({"type": "dashboard.domain", "domain": {"id": pk, "removed": True}})
            await self.coalescer.offer("hosts", {"type": "dashboard.hosts", **await self._hosts(event)})
            return
        previous = self.last.get(state["id"])
        if is_stale(previous, state):
            return
        urgent = previous is None or (state["status"], state["phase"]) != (previous["status"], previous["phase"])
        new_status = previous is None or previous["status"] != state["status"]
        self.last[state["id"]] = state
        if state["status"] in FINISHED:
            self.last.pop(state["id"], None)
        # A dashboard row carries the plain words only: the same for every role.
        await self.coalescer.offer(state["id"], {"type": "dashboard.migration", "migration": state}, urgent=urgent)
        if new_status and state["status"] != Status.SUCCEEDED:
            # Claimed (checking) or ended: what the target has promised changed.
            await self.coalescer.offer("hosts", {"type": "dashboard.hosts", **await self._hosts(event)})
        if urgent and state["status"] == Status.SUCCEEDED:
            # The counts may not include the move yet: the engine syncs both
            # hosts afterwards and publishes an inventory change, which sends
            # them again. Where the VM went is the migration's own word.
            await self.send_json(
                {
                    "type": "dashboard.hosts",
                    **await self._hosts(event),
                    "moved": {"id": state.get("domain_id"), "name": state["domain"], "host": state["target"]},
                }
            )

    def _current_state(self) -> dict[str, Any]:
        migrations = [
            m.as_line()
            for m in Migration.objects.filter(status__in=ACTIVE).order_by("-created_at")[: self.active_limit]
        ]
        for m in migrations:
            self.last[m["id"]] = m
        alarms = [d.as_event() for d in Domain.objects.split_brains()]
        return {"migrations": migrations, **hosts_message(host_counts()), "alarms": alarms, "sent_at": time.time()}

    async def _hosts(self, event: dict[str, Any]) -> HostsMessage:
        """The hosts' counts the publisher sent along, else read here."""
        if event.get("hosts") is not None:
            return hosts_message(event["hosts"])
        return hosts_message(await database_sync_to_async(host_counts)())


class DomainConsumer(SessionBoundConsumer):
    """``/ws/domains/<pk>/``: one VM's state for its page, then its changes.

    Messages: ``domain.state`` (first, ``domain`` as ``Domain.as_event()``),
    then ``domain.update`` (its new state after an inventory change, or
    ``{"id", "removed": true}`` once no host defines it). The socket joins the
    VM's own group: it hears nothing of other VMs.
    """

    async def connect(self) -> None:
        self.group: str | None = None
        self.read_at = 0.0
        may_watch, _ = await database_sync_to_async(access)(self.scope.get("user"))
        if not may_watch:
            await self.close(code=CLOSE_NOT_ALLOWED)
            return
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        # Join before reading, so no change falls between the read and the join.
        self.group = domain_group(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.read_at = time.time()
        state = await database_sync_to_async(_domain_state)(pk)
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        await self.send_json({"type": "domain.state", "domain": state, "sent_at": self.read_at})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def domain_update(self, event: dict[str, Any]) -> None:
        # Read before this socket's own first read: what the socket sent first is as new.
        if event["sent_at"] < self.read_at:
            return
        await self.send_json({"type": "domain.update", "domain": event["domain"], "sent_at": event["sent_at"]})


def _domain_state(pk: int) -> dict[str, Any] | None:
    domain = Domain.objects.filter(pk=pk).with_definitions().first()
    return None if domain is None else domain.as_event()
