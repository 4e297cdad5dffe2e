"""Sending to channel-layer groups from synchronous code: the worker's engine,
views and signal receivers (see _publishing_loop)."""

import asyncio
import os
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

# A publish waits this long at most (Redis gone): a migration must not stall on it.
PUBLISH_TIMEOUT = 5.0

_loop = None
_loop_pid = None
_loop_lock = threading.Lock()


def _publishing_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for publishing from synchronous code.

    ``async_to_sync`` from a plain thread (the worker's engine) makes a new
    event loop per call, and channels-redis a new Redis connection per loop:
    about 10 ms per message, six or more of them on a migration's way to
    `succeeded`. One loop, kept in a thread, keeps one connection pool. RQ
    forks a work horse per job and threads do not survive a fork, hence the pid.
    """
    global _loop, _loop_pid
    if _loop_pid != os.getpid():
        with _loop_lock:
            if _loop_pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-layer-publish", daemon=True).start()
                _loop, _loop_pid = loop, os.getpid()
    return _loop


def send_to_groups(*messages: tuple[str, dict[str, Any]]) -> None:
    """group_send each ``(group, message)``, together; raises what the layer raises."""
    layer = get_channel_layer()
    if layer is None:
        return

    async def send_all() -> None:
        await asyncio.gather(*(layer.group_send(group, message) for group, message in messages))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # Called from a thread that runs an event loop: blocking here would
        # stall it; let asgiref run the send in a thread of its own.
        async_to_sync(send_all)()
        return
    future = asyncio.run_coroutine_threadsafe(send_all(), _publishing_loop())
    try:
        future.result(timeout=PUBLISH_TIMEOUT)
    except TimeoutError:
        future.cancel()
        raise
