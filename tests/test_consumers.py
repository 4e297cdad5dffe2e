"""The WebSocket endpoints: who may watch, what arrives first, and how often."""

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard.publishing import DASHBOARD_GROUP
from hosts.models import Host
from hosts.signals import hosts_changed
from hosts.sync import sync_host
from migrations_app import events
from migrations_app.models import Migration
from tests.testdriver import write_host

# Transactional: the consumer reads the database from another thread. The
# user fixtures re-create the groups the flush between tests drops
# (serialized_rollback would clash with the content types that flush restores).
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")


@pytest.fixture
def migration(tmp_path):
    source = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    target = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02"))
    sync_host(source)
    sync_host(target)
    domain = source.domains.order_by("name").first()
    return Migration.objects.create(
        domain=domain,
        domain_name=domain.name,
        domain_uuid=domain.uuid,
        source=source,
        source_name=source.name,
        target=target,
        target_name=target.name,
        mode="live",
        status="running",
        phase="transferring_memory",
        started_at=None,
    )


def cookie_for(client, user):
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def communicator(path, *headers):
    from kvmweb.asgi import application

    return WebsocketCommunicator(application, path, headers=[ORIGIN, HOST, *headers])


def run(scenario):
    async_to_sync(scenario)()


def progress(n, total=100 * 2**20):
    done = n * 2**20
    return {
        "percent": n,
        "data_total": total,
        "data_processed": done,
        "data_remaining": total - done,
        "memory_remaining": total - done,
        "iteration": 1,
        "sampled_at": time.time(),
    }


async def publish(migration, **changes):
    for name, value in changes.items():
        setattr(migration, name, value)
    if "progress" in changes:
        await database_sync_to_async(Migration.objects.filter(pk=migration.pk).update)(progress=changes["progress"])
    await database_sync_to_async(events.publish_migration)(migration)


async def drain(ws, quiet=0.6):
    """Every message that arrives until none has for ``quiet`` seconds."""
    # receive_json_from() cancels the application when it times out;
    # receive_nothing() only looks.
    got = []
    while not await ws.receive_nothing(timeout=quiet, interval=0.02):
        got.append(await ws.receive_json_from(timeout=1))
    return got


def test_an_anonymous_visitor_is_refused(migration):
    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/")
        connected, _ = await ws.connect()
        assert not connected
        # Let the refused consumer end inside this event loop: left to the
        # loop's shutdown, its channel-layer read sometimes never finished.
        await ws.disconnect()
        ws = communicator("/ws/dashboard/")
        connected, _ = await ws.connect()
        assert not connected
        await ws.disconnect()

    run(scenario)


def test_a_user_without_a_role_is_refused(client, migration, outsider):
    cookie = cookie_for(client, outsider)

    async def scenario():
        for path in (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/"):
            ws = communicator(path, cookie)
            connected, _ = await ws.connect()
            assert not connected, path
            await ws.disconnect()

    run(scenario)


def test_a_socket_from_a_foreign_origin_is_refused(client, migration, viewer):
    from kvmweb.asgi import application

    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = WebsocketCommunicator(
            application, f"/ws/migrations/{migration.pk}/", headers=[(b"origin", b"http://evil.example"), cookie]
        )
        connected, _ = await ws.connect()
        assert not connected

    run(scenario)


def test_an_unknown_migration_is_refused(client, migration, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk + 1000}/", cookie)
        connected, _ = await ws.connect()
        if connected:  # accepted then closed is also a refusal
            assert (await ws.receive_output(timeout=1))["type"] == "websocket.close"
        await ws.disconnect()

    run(scenario)


def test_a_viewer_gets_the_full_state_first_then_updates(client, migration, viewer):
    cookie = cookie_for(client, viewer)
    migration.save_progress(progress(10))

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "migration.state"
        state = first["migration"]
        assert state["id"] == migration.pk
        assert state["status"] == "running"
        assert state["progress"]["percent"] == 10
        assert state["domain"] == migration.domain_name

        await publish(migration, progress=progress(20))
        update = await ws.receive_json_from(timeout=5)
        assert update["type"] == "migration.update"
        assert update["migration"]["progress"]["percent"] == 20
        assert update["migration"]["sent_at"] > 0
        await ws.disconnect()

    run(scenario)


@pytest.mark.slow
def test_a_socket_that_stays_quiet_for_a_while_still_gets_the_next_update(client, migration, viewer):
    # A queued migration can wait minutes for its first update; the channel
    # layer's idle read must not time out meanwhile (it did, after 5 s, with
    # redis-py 8's default socket timeout).
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        connected, _ = await ws.connect()
        assert connected
        assert (await ws.receive_json_from(timeout=5))["type"] == "migration.state"
        assert await ws.receive_nothing(timeout=7, interval=0.5)
        await publish(migration, progress=progress(30))
        update = await ws.receive_json_from(timeout=5)
        assert update["migration"]["progress"]["percent"] == 30
        await ws.disconnect()

    run(scenario)


def test_a_burst_is_coalesced_but_the_last_state_arrives(client, migration, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)  # the full state
        for n in range(1, 31):
            await publish(migration, progress=progress(n))
        got = await drain(ws)
        percents = [m["migration"]["progress"]["percent"] for m in got]
        assert percents, "nothing arrived"
        assert percents[-1] == 30
        assert len(percents) < 30
        await ws.disconnect()

    run(scenario)


def test_a_status_change_is_never_held_back(client, migration, viewer, monkeypatch):
    from migrations_app.consumers import MigrationConsumer

    monkeypatch.setattr(MigrationConsumer, "min_interval", 5.0)
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)
        await publish(migration, progress=progress(98))
        await ws.receive_json_from(timeout=2)  # the first update goes at once...
        await publish(migration, progress=progress(99))
        assert await ws.receive_nothing(timeout=0.5)  # ...the next sample waits out the 5 s
        published = time.monotonic()
        await publish(migration, status="succeeded", phase="done", stats={"downtime_ms": 80})
        update = await ws.receive_json_from(timeout=2)
        waited = time.monotonic() - published
        assert update["migration"]["status"] == "succeeded" and update["migration"]["stats"] == {"downtime_ms": 80}
        assert waited < 1.5, f"the status change waited {waited:.1f} s"
        assert await ws.receive_nothing(timeout=0.5)  # the held sample was superseded, not sent after
        await ws.disconnect()

    run(scenario)


def test_a_reconnecting_page_gets_the_current_state_not_a_stale_one(client, migration, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        await publish(migration, progress=progress(70))  # nobody listening
        ws = communicator(f"/ws/migrations/{migration.pk}/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["migration"]["progress"]["percent"] == 70
        await ws.disconnect()

    run(scenario)


def test_the_dashboard_gets_running_migrations_then_their_changes(client, migration, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "dashboard.state"
        assert [m["id"] for m in first["migrations"]] == [migration.pk]
        assert {h["name"]: h["domain_count"] for h in first["hosts"]} == {"kvm01": 2, "kvm02": 0}
        assert first["hosts_summary"] == "2 hosts · 2 virtual machines, 1 running"

        await publish(migration, progress=progress(40))
        update = await ws.receive_json_from(timeout=5)
        assert update["type"] == "dashboard.migration"
        assert update["migration"]["display"]["percent"] == 40

        await publish(migration, status="succeeded", phase="done")
        got = await drain(ws)
        moved = next(m for m in got if m["type"] == "dashboard.hosts")
        assert moved["moved"] == {"id": migration.domain_id, "name": migration.domain_name, "host": "kvm02"}

        # The engine then syncs both hosts and says the inventory changed.
        from hosts.models import Domain

        await database_sync_to_async(Domain.objects.filter(pk=migration.domain_id).update)(host=migration.target)
        await database_sync_to_async(hosts_changed)(["kvm01", "kvm02"])
        hosts = await ws.receive_json_from(timeout=5)
        assert hosts["type"] == "dashboard.hosts"
        assert {h["name"]: h["domain_count"] for h in hosts["hosts"]} == {"kvm01": 1, "kvm02": 1}
        assert any(m["type"] == "dashboard.migration" and m["migration"]["status"] == "succeeded" for m in got)
        await ws.disconnect()

    run(scenario)


def test_the_dashboard_is_sent_a_row_of_each_migration_not_its_whole_record(client, migration, viewer):
    # Every change of every migration goes to every open dashboard: the whole
    # record (events, checks, chart) was some 20 KB each time.
    checks = [{"name": f"c{i}", "result": "pass", "message": "A sentence of a check. " * 4} for i in range(15)]
    Migration.objects.filter(pk=migration.pk).update(
        checks=checks, events=[{"at": "2026-01-01T00:00:00", "message": "A step of the way. " * 5}] * 40
    )
    migration.refresh_from_db()
    cookie = cookie_for(client, viewer)

    async def scenario():
        dashboard, page = (
            communicator("/ws/dashboard/", cookie),
            communicator(f"/ws/migrations/{migration.pk}/", cookie),
        )
        for ws in (dashboard, page):
            assert (await ws.connect())[0]
        first = await dashboard.receive_json_from(timeout=5)
        await page.receive_json_from(timeout=5)
        await publish(migration, status="running", phase="transferring_memory", progress=progress(40))
        row = (await dashboard.receive_json_from(timeout=5))["migration"]
        full = (await page.receive_json_from(timeout=5))["migration"]
        assert len(json.dumps(first["migrations"][0])) < 1500 and len(json.dumps(row)) < 1500
        assert len(json.dumps(full)) > 10_000  # the migration's own page still gets everything
        # What the dashboard's row shows is all there.
        # (A live migration's row says its pass, not a percentage that starts again at each pass.)
        assert row["display"]["bar"] is None and row["display"]["summary"].startswith("pass 1 · 60.0 MiB left")
        assert (row["domain"], row["source"], row["target"], row["status"]) == (
            migration.domain_name,
            "kvm01",
            "kvm02",
            "running",
        )
        assert row["url"] == f"/migrations/{migration.pk}/" and row["sampled_at"] is not None
        for ws in (dashboard, page):
            await ws.disconnect()

    run(scenario)


def test_the_dashboard_shows_the_counts_its_publisher_read_rather_than_reading_them_per_socket(
    client, migration, viewer
):
    cookie = cookie_for(client, viewer)
    sent = [{"name": "counted-once", "status": "online", "domain_count": 7, "running_count": 5, "capacity": None}]

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)
        layer = get_channel_layer()
        await layer.group_send(
            DASHBOARD_GROUP, {"type": "dashboard.update", "inventory": {"hosts": ["kvm01"]}, "hosts": sent}
        )
        hosts = await ws.receive_json_from(timeout=5)
        # The line above the host table is written from those counts too.
        assert hosts == {
            "type": "dashboard.hosts",
            "hosts": sent,
            "hosts_summary": "1 host · 7 virtual machines, 5 running",
        }
        await ws.disconnect()

    run(scenario)


@pytest.mark.parametrize("who, sees", [("viewer", False), ("operator", True)])
def test_libvirt_s_own_text_reaches_operators_only(client, migration, request, who, sees):
    """libvirt's messages can quote files and internal details: viewers get the plain words."""
    migration.error = "The target refused the domain."
    migration.error_detail = "internal error: cannot open /etc/libvirt/secret.xml"
    migration.checks = [{"name": "storage", "result": "fail", "message": "Disks", "detail": "/srv/raw/path"}]
    migration.save()
    cookie = cookie_for(client, request.getfixturevalue(who))

    async def scenario():
        for path in (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/"):
            ws = communicator(path, cookie)
            assert (await ws.connect())[0]
            first = await ws.receive_json_from(timeout=5)
            if "migration" in first:
                state = first["migration"]
                assert ("secret.xml" in state["error_detail"]) is sees
                assert (state["checks"][0]["detail"] == "/srv/raw/path") is sees
            else:
                # The dashboard's rows carry the plain words only, for every role.
                state = first["migrations"][0]
                assert "secret.xml" not in json.dumps(first) and "/srv/raw/path" not in json.dumps(first)
            assert state["error"] == "The target refused the domain."
            await ws.disconnect()

    run(scenario)
    client.force_login(request.getfixturevalue(who))
    api = client.get(f"/api/migrations/{migration.pk}/").json()
    assert ("secret.xml" in api["error_detail"]) is sees and (api["checks"][0]["detail"] != "") is sees
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert ("secret.xml" in page) is sees and ("/srv/raw/path" in page) is sees
