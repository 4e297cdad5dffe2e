"""Inventory changes reach the dashboard's socket: each VM that changed, and the split-brain alarms."""

import pytest
from channels.db import database_sync_to_async

from hosts.models import Domain, Host
from hosts.sync import sync_host, sync_hosts
from tests.test_consumers import communicator, cookie_for, drain, run
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db(transaction=True)

WEB01 = domain_uuid("kvm02", 1)


def test_a_vm_that_moved_reaches_the_dashboard_socket_with_its_other_definitions(client, viewer, tmp_path):
    write_host(tmp_path, "kvm01", domains=[])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    kvm01 = Host.objects.create(name="kvm01", uri=f"test://{tmp_path}/kvm01.xml")
    Host.objects.create(name="kvm02", uri=f"test://{tmp_path}/kvm02.xml")
    sync_hosts()
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "dashboard.state" and first["alarms"] == []

        write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
        write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff")])
        await database_sync_to_async(sync_host)(kvm01)
        got = await drain(ws)
        domain = next(m["domain"] for m in got if m["type"] == "dashboard.domain")
        assert (domain["name"], domain["host"], domain["state"]) == ("web01", "kvm01", "running")
        assert domain["also_defined"] == [{"host": "kvm02", "state": "running", "state_label": "running"}]
        hosts = next(m for m in got if m["type"] == "dashboard.hosts")
        assert {h["name"]: h["running_count"] for h in hosts["hosts"]} == {"kvm01": 1, "kvm02": 0}
        await ws.disconnect()

    run(scenario)


def test_a_vm_seen_for_the_first_time_reaches_the_dashboard_and_its_counts(client, viewer, tmp_path):
    kvm01 = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", domains=[]))
    sync_host(kvm01)
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["hosts_summary"] == "1 host · 0 virtual machines, 0 running"

        write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
        await database_sync_to_async(sync_host)(kvm01)
        got = await drain(ws)
        assert [m["domain"]["name"] for m in got if m["type"] == "dashboard.domain"] == ["web01"]
        hosts = next(m for m in got if m["type"] == "dashboard.hosts")
        assert hosts["hosts_summary"] == "1 host · 1 virtual machine, 1 running"
        await ws.disconnect()

    run(scenario)


def test_a_split_brain_is_an_alarm_on_the_dashboard_until_it_ends(client, viewer, tmp_path):
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    for name in ("kvm01", "kvm02"):
        Host.objects.create(name=name, uri=f"test://{tmp_path}/{name}.xml")
    sync_hosts()
    sync_hosts()
    assert Domain.objects.get(uuid=WEB01).split_brain
    cookie = cookie_for(client, viewer)
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert "web01</a> runs on kvm01 and kvm02 at once." in page
    assert "Split brain:" in client.get(f"/domains/{WEB01}/").content.decode()

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert [(a["name"], a["running_on"]) for a in first["alarms"]] == [("web01", ["kvm01", "kvm02"])]

        write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff")])
        await database_sync_to_async(sync_hosts)(["kvm02"])
        got = await drain(ws)
        domain = next(m["domain"] for m in got if m["type"] == "dashboard.domain")
        assert domain["split_brain"] is False and domain["running_on"] == ["kvm01"]
        await ws.disconnect()

    run(scenario)
