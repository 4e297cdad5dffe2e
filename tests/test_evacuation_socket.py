"""/ws/evacuations/<id>/: who may watch, the full state first, then every change."""

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from hosts.models import Domain, Host
from maintenance import events
from maintenance.models import Evacuation, Item
from tests.migration_helpers import migration_for
from tests.test_consumers import communicator, cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def evacuation():
    item = {"domain": 1, "domain_name": "web01", "target": 2, "target_name": "kvm02", "state": Item.PENDING}
    return Evacuation.objects.create(host_name="kvm01", plan=[{**item, "migrations": [], "error": ""}])


def test_anonymous_users_and_users_without_a_role_are_refused(client, outsider, evacuation):
    cookie = cookie_for(client, outsider)

    async def scenario():
        for headers in ((), (cookie,)):
            ws = communicator(f"/ws/evacuations/{evacuation.pk}/", *headers)
            connected, code = await ws.connect()
            assert not connected and code == 4403

    async_to_sync(scenario)()


def test_the_full_state_comes_first_then_each_change(client, viewer, evacuation):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/evacuations/{evacuation.pk}/", cookie)
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "evacuation.state"
        assert first["evacuation"]["status"] == "queued"
        assert first["evacuation"]["plan"][0]["state_display"] == "Waiting for a slot"
        # The texts the page shows, written on the server (the script only places them).
        assert first["evacuation"]["plan"][0]["percent_display"] == ""
        assert first["evacuation"]["progress_display"] == "0 of 1"

        evacuation.plan[0]["state"] = Item.MOVED
        await database_sync_to_async(evacuation.save_plan)()
        await database_sync_to_async(evacuation.start)()
        await database_sync_to_async(events.publish)(evacuation)
        update = await ws.receive_json_from(timeout=5)
        assert update["type"] == "evacuation.update"
        assert update["evacuation"]["status"] == "running"
        assert update["evacuation"]["progress"] == {"done": 1, "moved": 1, "total": 1}
        assert update["evacuation"]["progress_display"] == "1 of 1"
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(
    "status, progress, shown",
    [
        ("running", {"percent": 39.6}, "40 %"),
        ("running", {"percent": 0.4}, "0 %"),
        # Past its first pass a live migration's percentage starts again at each pass: its pass is shown.
        ("running", {"percent": 83.0, "iteration": 4, "memory_remaining": 196 * 2**20}, "pass 4 · 196.0 MiB left"),
        ("succeeded", {"percent": 97.0}, "100 %"),
        ("running", {}, ""),  # libvirt has said nothing yet
        ("queued", {}, ""),
    ],
)
def test_each_move_shows_its_migration_s_whole_percent(evacuation, status, progress, shown):
    kvm01, kvm02 = Host.objects.create(name="kvm01", uri="test:///default"), Host.objects.create(name="kvm02")
    dom = Domain.objects.create(name="web01", uuid="6b8c1b0e-0000-4000-8000-000000000001", host=kvm01)
    m = migration_for(dom, kvm02, status=status, progress=progress)
    evacuation.plan[0].update(state=Item.MOVING, migrations=[m.pk])
    [item] = evacuation.as_event({m.pk: m})["plan"]
    assert item["percent_display"] == shown


def test_an_unknown_evacuation_closes_the_socket(client, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator("/ws/evacuations/999/", cookie)
        connected, code = await ws.connect()
        assert not connected and code == 4404

    async_to_sync(scenario)()
