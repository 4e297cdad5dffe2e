"""WebSocket consumer of one migration's progress (the dashboard's is in dashboard/).

It refuses anonymous users and users without a role, sends the full current
state first (so a page that reconnects never shows stale data), then forwards
what migrations_app.events publishes, coalesced so that a socket gets at most
one message per ``min_interval`` per migration: the latest state always
arrives (a timer flushes it), and a change of status or phase goes out at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from channels.db import database_sync_to_async

from core.roles import AnyUser, has_role, is_operator
from core.websocket import SessionBoundConsumer

from .events import migration_group
from .models import FINISHED, Migration, plain_only

# Close codes in the 4000 range are the application's own; a browser sees them.
CLOSE_NOT_ALLOWED = 4403
CLOSE_NOT_FOUND = 4404


def _user_may_watch(user: AnyUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and has_role(user))


def access(user: AnyUser | None) -> tuple[bool, bool]:
    """(may watch, sees libvirt's own text): any role watches; operators see the detail."""
    if user is None or not _user_may_watch(user):
        return False, False
    return True, is_operator(user)


class Coalescer:
    """Per-key throttle for one socket.

    ``offer(key, payload, urgent)`` sends at once if the key has not been sent
    for ``interval`` seconds (or the payload is urgent); otherwise it keeps only
    the newest payload and a timer sends that when the interval is up.
    """

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], interval: float) -> None:
        self.send = send
        self.interval = interval
        self.last_sent: dict[object, float] = {}
        self.pending: dict[object, dict[str, Any]] = {}
        self.timers: dict[object, asyncio.Task[None]] = {}

    async def offer(self, key: object, payload: dict[str, Any], urgent: bool = False) -> None:
        now = time.monotonic()
        wait = self.last_sent.get(key, -1e9) + self.interval - now
        if urgent or wait <= 0:
            self.pending.pop(key, None)
            timer = self.timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            await self._send(key, payload)
            return
        self.pending[key] = payload
        if key not in self.timers:
            self.timers[key] = asyncio.create_task(self._flush_later(key, wait))

    async def _flush_later(self, key: object, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            return
        self.timers.pop(key, None)
        payload = self.pending.pop(key, None)
        if payload is not None:
            await self._send(key, payload)

    async def _send(self, key: object, payload: dict[str, Any]) -> None:
        self.last_sent[key] = time.monotonic()
        await self.send(payload)

    def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.pending.clear()


def _sampled_at(state: Mapping[str, Any]) -> float | None:
    """When the progress sample a state reflects was taken: a dashboard row
    (as_line) says it itself; a full state has it in its progress."""
    if "sampled_at" in state:
        return state["sampled_at"]
    return (state.get("progress") or {}).get("sampled_at")


def is_stale(previous: Mapping[str, Any] | None, state: Mapping[str, Any]) -> bool:
    """True if ``state`` is older than what the socket already has.

    The first message is read from the database after joining the group, so
    an update published just before that read can arrive after it.
    """
    if previous is None:
        return False
    if previous["status"] in FINISHED and state["status"] not in FINISHED:
        return True
    if previous["status"] == state["status"]:
        before, now = _sampled_at(previous), _sampled_at(state)
        if before is not None and now is not None and now < before:
            return True
    return False


class MigrationConsumer(SessionBoundConsumer):
    """``/ws/migrations/<pk>/``: one migration's full state, then its updates."""

    min_interval = 0.2

    async def connect(self) -> None:
        self.group: str | None = None
        self.last: dict[str, Any] | None = None
        self.coalescer = Coalescer(self._deliver, self.min_interval)
        may_watch, self.detail = await database_sync_to_async(access)(self.scope.get("user"))
        if not may_watch:
            await self.close(code=CLOSE_NOT_ALLOWED)
            return
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        # Join before reading, so no update falls between the read and the join.
        self.group = migration_group(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        state = await self._current_state(pk)
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        await self._deliver(state, kind="migration.state")

    async def disconnect(self, code: int) -> None:
        self.coalescer.stop()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def migration_update(self, event: dict[str, Any]) -> None:
        state = event["migration"]
        if is_stale(self.last, state):
            return
        urgent = self.last is None or (state["status"], state["phase"]) != (self.last["status"], self.last["phase"])
        # Remember what was offered (not only what was sent) so that the next
        # comparison is against the newest state this socket will show.
        self.last = state
        await self.coalescer.offer(state["id"], state, urgent=urgent)

    async def _deliver(self, state: dict[str, Any], kind: str = "migration.update") -> None:
        if kind == "migration.state":
            self.last = state
        await self.send_json({"type": kind, "migration": state if self.detail else plain_only(state)})

    @database_sync_to_async
    def _current_state(self, pk: int) -> dict[str, Any] | None:
        migration = Migration.objects.filter(pk=pk).first()
        if migration is None:
            return None
        state = migration.as_event()
        state["sent_at"] = time.time()
        return dict(state)
