"""Publishing from synchronous code (the worker's engine) reaches the groups over one Redis connection."""

import time

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from dashboard.publishing import DASHBOARD_GROUP, publish_inventory
from migrations_app import events

pytestmark = pytest.mark.django_db


def connections_received(url):
    return redis.Redis.from_url(url).info("stats")["total_connections_received"]


def test_a_published_change_reaches_the_dashboard_group():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    try:
        publish_inventory(["kvm01"], [])
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(DASHBOARD_GROUP, channel)
    # With the hosts' counts, read once by the publisher for every dashboard.
    assert message["inventory"].pop("sent_at") > 0
    assert message == {
        "type": "dashboard.update",
        "inventory": {"hosts": ["kvm01"], "domains": [], "removed": []},
        "hosts": [],
    }


def test_many_publishes_share_one_connection(redis_url):
    publish_inventory([], [])  # the process's publishing loop and pool exist
    before = connections_received(redis_url)
    for _ in range(20):
        publish_inventory([], [])
    # Before, every publish made an event loop of its own and channels-redis a
    # new connection for it: 20 or more here.
    assert connections_received(redis_url) - before <= 2


def test_a_publish_to_a_redis_that_is_gone_gives_up_without_raising(settings):
    from channels.layers import channel_layers

    from kvmweb.settings import channel_layers as layers_for

    settings.CHANNEL_LAYERS = layers_for("redis://127.0.0.1:1/0")  # nothing listens there
    channel_layers.backends.pop("default", None)
    try:
        started = time.monotonic()
        publish_inventory([], [])
        assert time.monotonic() - started < 3
    finally:
        channel_layers.backends.pop("default", None)


@pytest.mark.django_db(transaction=True)
def test_only_a_change_of_state_carries_the_hosts_counts_to_the_dashboard(tmp_path):
    """Counting the hosts is a query per publish; a note or a new phase cannot
    change the counts, so it goes without them (a dashboard that needs them
    reads them itself)."""
    from channels.db import database_sync_to_async

    from hosts.models import Host
    from hosts.sync import sync_host
    from migrations_app.models import Status
    from tests.migration_helpers import migration_for
    from tests.testdriver import write_host

    source = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=1))
    target = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02"))
    sync_host(source)
    sync_host(target)
    migration = migration_for(source.domains.get(), target, status=Status.QUEUED)
    changes = [
        (migration.start_checking, (), True),
        (migration.start, (), True),
        (migration.set_phase, ("transferring_memory",), False),
        (migration.note, ("Starting the transfer.",), False),
        (migration.succeed, ({},), True),
    ]

    async def scenario():
        # A layer of its own to listen with: the process's one (which the
        # engine publishes with) stays free of this loop's receive.
        from channels.layers import channel_layers

        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        await layer.group_add(events.migration_group(migration.pk), channel)
        await layer.group_add(DASHBOARD_GROUP, channel)
        for change, args, counted in changes:
            await database_sync_to_async(change)(*args)
            got = {}
            while "dashboard.update" not in got:
                message = await layer.receive(channel)
                got[message["type"]] = message
            assert got["migration.update"]["migration"]["status"] == migration.status
            hosts = got["dashboard.update"]["hosts"]
            assert (hosts is not None) is counted, change.__name__
            if counted:
                assert [h["name"] for h in hosts] == ["kvm01", "kvm02"]
        await layer.group_discard(events.migration_group(migration.pk), channel)
        await layer.group_discard(DASHBOARD_GROUP, channel)

    async_to_sync(scenario)()


def test_a_check_list_is_rendered_once_however_often_its_state_is_sent(monkeypatch):
    from migrations_app import display

    renders = []
    real = display.render_to_string
    monkeypatch.setattr(display, "render_to_string", lambda *a, **k: renders.append(a) or real(*a, **k))
    display._rendered_checks.cache_clear()
    checks = [{"name": "memory", "result": "pass", "message": "kvm02 has room <b>", "detail": "", "label": "Memory"}]
    first = display.checks_html(checks)
    assert display.checks_html([dict(c) for c in checks]) == first
    assert len(renders) == 1
    assert "&lt;b&gt;" in first  # escaped as before
    failed = display.checks_html([{**checks[0], "result": "fail"}])
    assert failed != first and len(renders) == 2
