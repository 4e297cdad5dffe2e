"""A VM's page listens to its own VM: /ws/domains/<id>/ and the group domain-<id>.

Before, every VM page opened the dashboard's socket and threw away what was
about other VMs: each page got every VM's changes and every migration's row.
"""

import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from dashboard.publishing import domain_group
from hosts.models import Domain, Host
from hosts.sync import sync_host
from tests.test_consumers import communicator, cookie_for, drain, run
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db(transaction=True)

WEB01, WEB02 = domain_uuid("kvm01", 1), domain_uuid("kvm01", 2)


@pytest.fixture
def kvm01(tmp_path):
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running"), ("web02", WEB02, "running")])
    host = Host.objects.create(name="kvm01", uri=f"test://{tmp_path}/kvm01.xml")
    sync_host(host)
    return host


def states(tmp_path, host, web01, web02):
    """Write what kvm01 reports and read it in, as the event watcher does."""
    write_host(tmp_path, "kvm01", domains=[(name, uuid, state) for name, uuid, state in web01 + web02])
    sync_host(host)


def test_the_vm_page_opens_its_own_vm_s_socket_not_the_dashboard_s(client, kvm01, viewer):
    client.force_login(viewer)
    web01 = Domain.objects.get(uuid=WEB01)
    page = client.get(f"/domains/{WEB01}/").content.decode()
    assert f'data-ws="/ws/domains/{web01.pk}/"' in page
    assert "/ws/dashboard/" not in page


def test_a_vm_page_s_socket_gets_its_vm_then_its_changes_and_nothing_of_another_vm(client, kvm01, viewer, tmp_path):
    web01, web02 = Domain.objects.get(uuid=WEB01), Domain.objects.get(uuid=WEB02)
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/domains/{web01.pk}/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "domain.state"
        assert (first["domain"]["id"], first["domain"]["name"], first["domain"]["state"]) == (
            web01.pk,
            "web01",
            "running",
        )

        # Another VM on the same host changes: the dashboard hears of it, this page does not.
        dashboard = communicator("/ws/dashboard/", cookie)
        assert (await dashboard.connect())[0]
        await dashboard.receive_json_from(timeout=5)
        await database_sync_to_async(states)(
            tmp_path, kvm01, [("web01", WEB01, "running")], [("web02", WEB02, "shutoff")]
        )
        seen = await drain(dashboard)
        assert [m["domain"]["id"] for m in seen if m["type"] == "dashboard.domain"] == [web02.pk]
        assert await drain(ws) == []

        # Its own VM changes: this page hears of it.
        await database_sync_to_async(states)(
            tmp_path, kvm01, [("web01", WEB01, "shutoff")], [("web02", WEB02, "shutoff")]
        )
        got = await drain(ws)
        assert [(m["type"], m["domain"]["id"], m["domain"]["state"]) for m in got] == [
            ("domain.update", web01.pk, "shutoff")
        ]
        assert got[0]["domain"]["state_label"] == "Shut off"
        for socket in (ws, dashboard):
            await socket.disconnect()

    run(scenario)


def test_a_vm_that_no_host_defines_any_more_is_said_to_be_removed(client, kvm01, viewer, tmp_path):
    web01 = Domain.objects.get(uuid=WEB01)
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/domains/{web01.pk}/", cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)
        await database_sync_to_async(states)(tmp_path, kvm01, [], [("web02", WEB02, "running")])
        got = await drain(ws)
        assert [(m["type"], m["domain"]) for m in got] == [("domain.update", {"id": web01.pk, "removed": True})]
        await ws.disconnect()

    run(scenario)


def test_news_read_before_the_socket_s_first_state_is_dropped(client, kvm01, viewer):
    """The socket joins its group before it reads the VM, so a change published
    just before that read can arrive after it: what it sent first is as new."""
    web01 = Domain.objects.get(uuid=WEB01)
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator(f"/ws/domains/{web01.pk}/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        layer = get_channel_layer()
        stale = {**first["domain"], "state": "paused"}
        await layer.group_send(
            domain_group(web01.pk), {"type": "domain.update", "domain": stale, "sent_at": first["sent_at"] - 1}
        )
        assert await drain(ws) == []
        await layer.group_send(
            domain_group(web01.pk), {"type": "domain.update", "domain": stale, "sent_at": time.time()}
        )
        assert [m["domain"]["state"] for m in await drain(ws)] == ["paused"]
        await ws.disconnect()

    run(scenario)


def test_who_may_open_a_vm_page_s_socket(client, kvm01, viewer, outsider):
    web01 = Domain.objects.get(uuid=WEB01)
    outsider_cookie, viewer_cookie = cookie_for(client, outsider), cookie_for(client, viewer)

    async def attempt(path, *headers):
        ws = communicator(path, *headers)
        answer = await ws.connect()
        await ws.disconnect()
        return answer

    async def scenario():
        path = f"/ws/domains/{web01.pk}/"
        assert await attempt(path) == (False, 4403)  # anonymous
        assert await attempt(path, outsider_cookie) == (False, 4403)  # no role
        assert await attempt(f"/ws/domains/{web01.pk + 1000}/", viewer_cookie) == (False, 4404)  # no such VM
        assert (await attempt(path, viewer_cookie))[0] is True

    run(scenario)


def test_a_publish_reaches_the_vm_s_group_and_no_other(kvm01):
    """At the channel layer: one inventory change, sent to the dashboard and to each changed VM's group."""
    from dashboard.publishing import DASHBOARD_GROUP, publish_inventory

    web01, web02 = Domain.objects.get(uuid=WEB01), Domain.objects.get(uuid=WEB02)
    layer = get_channel_layer()
    channels = {group: async_to_sync(layer.new_channel)() for group in (domain_group(web01.pk), DASHBOARD_GROUP)}
    other = async_to_sync(layer.new_channel)()
    for group, channel in [*channels.items(), (domain_group(web02.pk), other)]:
        async_to_sync(layer.group_add)(group, channel)
    publish_inventory(["kvm01"], [web01.pk])
    to_vm = async_to_sync(layer.receive)(channels[domain_group(web01.pk)])
    to_dashboard = async_to_sync(layer.receive)(channels[DASHBOARD_GROUP])
    assert to_vm["type"] == "domain.update" and to_vm["domain"]["name"] == "web01"
    assert [d["id"] for d in to_dashboard["inventory"]["domains"]] == [web01.pk]

    # Then a marker to web02's group: had the publish sent web02's page anything,
    # that would come first (no waiting for a silence, and no read cancelled midway).
    async_to_sync(layer.group_send)(domain_group(web02.pk), {"type": "marker"})
    assert async_to_sync(layer.receive)(other) == {"type": "marker"}
