"""``/ws/evacuations/<pk>/``: one evacuation's full state first, then every change.

The same rules as the migration sockets: anonymous users and users without a
role are refused; the group is joined before the state is read, so no update
falls between the two.
"""

import time
from typing import Any

from channels.db import database_sync_to_async

from core.websocket import SessionBoundConsumer
from migrations_app.consumers import CLOSE_NOT_ALLOWED, CLOSE_NOT_FOUND, _user_may_watch

from . import events
from .models import Evacuation


class EvacuationConsumer(SessionBoundConsumer):
    async def connect(self) -> None:
        self.group: str | None = None
        if not await database_sync_to_async(_user_may_watch)(self.scope.get("user")):
            await self.close(code=CLOSE_NOT_ALLOWED)
            return
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = events.group(pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        state = await self._current_state(pk)
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        await self.send_json({"type": "evacuation.state", "evacuation": state})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def evacuation_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "evacuation.update", "evacuation": event["evacuation"]})

    @database_sync_to_async
    def _current_state(self, pk: int) -> dict[str, Any] | None:
        evacuation = Evacuation.objects.filter(pk=pk).first()
        if evacuation is None:
            return None
        state = events.state(evacuation)
        state["sent_at"] = time.time()
        return state
