"""Progress and state changes, published to the channel layer for browsers.

Group ``migration-<id>`` gets every update of one migration; group
``dashboard`` gets every state change of any migration and of the inventory.
Messages are ``{"type": "migration.update", "migration": {...}}`` (and
``dashboard.update``); consumers forward them as JSON with the same shape.
"""

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"


def migration_group(pk):
    return f"migration-{pk}"


def publish_migration(migration, dashboard=True):
    """Send a migration's full state to its watchers. Never raises: a
    migration must not fail because nobody could be told about it."""
    layer = get_channel_layer()
    if layer is None:
        return
    payload = migration.as_event()
    payload["sent_at"] = time.time()
    try:
        async_to_sync(layer.group_send)(
            migration_group(migration.pk), {"type": "migration.update", "migration": payload}
        )
        if dashboard:
            async_to_sync(layer.group_send)(DASHBOARD_GROUP, {"type": "dashboard.update", "migration": payload})
    except Exception as e:
        log.warning("could not publish migration %s: %s", migration.pk, e)


def publish_dashboard(kind, data):
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, {"type": "dashboard.update", kind: data})
    except Exception as e:
        log.warning("could not publish %s to the dashboard: %s", kind, e)
