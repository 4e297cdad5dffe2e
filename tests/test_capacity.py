"""Capacity: what a host has promised its guests (their maximum memory, and the
guests on their way in) against what it can hold, read through the test driver."""

import pytest

from hosts import capacity
from hosts.capacity import Guest
from hosts.models import Domain, Host
from hosts.sync import sync_host
from migrations_app.checks import capacity_results
from migrations_app.models import Migration, Status
from tests.migration_helpers import migration_for
from tests.testdriver import domain_uuid, domain_xml, write_host

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
GiB = 1024 * MiB


def make_host(tmp_path, name, guests, memory_mib=16384, **fields):
    """A test-driver host running ``guests``: (name, state, memory MiB, current MiB, vCPUs[, huge page KiB])."""
    xml = [
        domain_xml(g[0], domain_uuid(name, i), g[1], g[2], g[4], current_mib=g[3], hugepage_kib=(g[5:] or [0])[0])
        for i, g in enumerate(guests)
    ]
    host = Host.objects.create(name=name, uri=write_host(tmp_path, name, domains=xml, memory_mib=memory_mib), **fields)
    assert sync_host(host).online
    return Host.objects.get(pk=host.pk)


def incoming(dom, target, status=Status.RUNNING):
    return migration_for(dom, target, status=status)


def page_text(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode().replace("\xa0", " ")


@pytest.fixture
def hosts(tmp_path, settings):
    settings.KVMWEB_RESERVED_MEMORY_MIB = 1024
    settings.KVMWEB_MEMORY_ALLOCATION_RATIO = 1.0
    settings.KVMWEB_CPU_ALLOCATION_RATIO = 4.0
    kvm01 = make_host(
        tmp_path,
        "kvm01",
        [
            ("big1", "running", 6144, 2048, 2),
            ("big2", "running", 6144, 6144, 2),
            ("off1", "shutoff", 4096, 4096, 1),
        ],
    )
    kvm02 = make_host(tmp_path, "kvm02", [("web", "running", 2048, 1024, 1), ("old", "shutoff", 8192, 8192, 4)])
    return kvm01, kvm02


def test_sync_stores_the_maximum_memory_not_what_the_balloon_left(hosts):
    big1 = Domain.objects.get(name="big1")
    assert big1.memory == 2 * GiB
    assert big1.max_memory == 6 * GiB


def test_committed_memory_is_the_maximum_memory_of_the_guests_the_host_runs(hosts):
    kvm01, kvm02 = hosts
    cap = capacity.for_host(kvm01)
    # Both running guests at their <memory>, not their balloon; the shut-off one holds nothing.
    assert cap.memory_committed == 12 * GiB
    assert cap.vcpus_committed == 4
    assert cap.memory_capacity == 15 * GiB  # 16 GiB less the default 1 GiB reserve, ratio 1.0
    assert cap.memory_room == 3 * GiB
    assert cap.vcpu_capacity == 4 * 4
    assert capacity.for_host(kvm02).memory_committed == 2 * GiB


def test_a_guest_on_its_way_in_counts_against_the_target_until_it_has_landed(hosts):
    kvm01, kvm02 = hosts
    big1 = Domain.objects.get(name="big1")
    migration = incoming(big1, kvm02, Status.QUEUED)
    assert capacity.for_host(kvm02).memory_committed == 2 * GiB, "queued: not claimed yet"
    Migration.objects.filter(pk=migration.pk).update(status=Status.CHECKING)
    cap = capacity.for_host(kvm02)
    assert (cap.memory_committed, cap.memory_incoming, cap.incoming) == (8 * GiB, 6 * GiB, 1)
    assert cap.vcpus_committed == 3
    # Its own claim does not count against it when its checks run again.
    assert capacity.for_host(kvm02, exclude_migration=migration.pk).memory_committed == 2 * GiB
    Migration.objects.filter(pk=migration.pk).update(status=Status.RUNNING)
    assert capacity.for_host(kvm02).memory_committed == 8 * GiB
    # A sync in the middle of the move shows the guest (paused) on the target:
    # it is counted there once, not twice.
    Domain.objects.filter(pk=big1.pk).update(host=kvm02, state="paused")
    assert capacity.for_host(kvm02).memory_committed == 8 * GiB
    Migration.objects.filter(pk=migration.pk).update(status=Status.SUCCEEDED)
    Domain.objects.filter(pk=big1.pk).update(state="running")
    assert capacity.for_host(kvm02).memory_committed == 8 * GiB
    assert capacity.for_host(kvm01).memory_committed == 6 * GiB


def test_failed_and_cancelled_migrations_hold_nothing(hosts):
    kvm01, kvm02 = hosts
    for status in (Status.FAILED, Status.CANCELLED):
        m = incoming(Domain.objects.get(name="big1"), kvm02, status)
        assert capacity.for_host(kvm02).memory_committed == 2 * GiB
        m.delete()


def test_a_cold_migration_of_a_shut_off_guest_promises_nothing_on_the_target(hosts):
    kvm01, kvm02 = hosts
    off = Domain.objects.get(name="off1")
    migration = migration_for(off, kvm02, mode="cold", status=Status.CHECKING)
    assert capacity.for_host(kvm02).memory_committed == 6 * GiB, "not known yet: counted"
    Migration.objects.filter(pk=migration.pk).update(was_running=False)
    assert capacity.for_host(kvm02).memory_committed == 2 * GiB


def test_the_check_of_a_shut_off_guest_going_cold_only_warns_that_it_could_not_start(hosts):
    from dataclasses import replace

    from hosts.libvirt import open_host
    from migrations_app.checks import CheckInput, Checks
    from migrations_app.checks.capacity import check_memory

    kvm01, kvm02 = hosts
    Host.objects.filter(pk=kvm02.pk).update(memory_reserved_mib=14 * 1024)  # 2 GiB for guests, all promised
    kvm02 = Host.objects.get(pk=kvm02.pk)
    off = Domain.objects.get(name="off1")
    checks = Checks()
    values = CheckInput(uuid=str(off.uuid), name="off1", source=kvm01, target=kvm02, mode="cold", storage="shared")
    with open_host(kvm01.uri) as source, open_host(kvm02.uri) as target:
        check_memory(checks, values, source.domain_details(off.uuid), source, target)
        memory = checks.results[0]
        assert memory.result == "warn"
        assert memory.message.startswith("off1 is shut off and stays so on kvm02, so it needs nothing there now")
        assert "could not start there: kvm02 cannot hold off1" in memory.message
        checks = Checks()
        check_memory(checks, replace(values, mode="live"), source.domain_details(off.uuid), source, target)
        assert checks.results[0].result == "fail"


def test_the_reserve_and_ratios_come_from_the_host_or_else_the_settings(hosts, settings):
    kvm01, _ = hosts
    settings.KVMWEB_RESERVED_MEMORY_MIB = 4096
    settings.KVMWEB_MEMORY_ALLOCATION_RATIO = 1.5
    assert capacity.for_host(kvm01).memory_capacity == int(12 * GiB * 1.5)
    Host.objects.filter(pk=kvm01.pk).update(memory_reserved_mib=0, memory_ratio=1.0, cpu_ratio=0.5)
    cap = capacity.for_host(Host.objects.get(pk=kvm01.pk))
    assert cap.memory_capacity == 16 * GiB
    assert cap.vcpu_capacity == 2


def test_huge_pages_come_out_of_the_memory_capacity(hosts):
    kvm01, _ = hosts
    Host.objects.filter(pk=kvm01.pk).update(hugepages={"2048": 1024, "1048576": 2})
    assert capacity.for_host(Host.objects.get(pk=kvm01.pk)).memory_capacity == 15 * GiB - 2 * GiB - 2 * GiB


def test_a_guest_that_does_not_fit_fails_in_plain_words(hosts):
    kvm01, kvm02 = hosts
    memory, vcpus = capacity_results(kvm01, Guest("new", 4 * GiB, vcpus=1))
    assert memory.result == "fail"
    assert memory.message.startswith("kvm01 cannot hold new: 12.0 GiB of the 15.0 GiB it can give guests")
    assert "may use up to 4.0 GiB" in memory.message
    assert vcpus.result == "pass"
    memory, _ = capacity_results(kvm01, Guest("new", 3 * GiB))
    assert memory.result == "warn", "it fits exactly, leaving nothing"
    memory, _ = capacity_results(kvm01, Guest("new", 1 * GiB))
    assert memory.result == "pass" and "3.0 GiB of its 15.0 GiB for guests unpromised" in memory.message


def test_a_second_guest_does_not_fit_where_the_first_is_on_its_way(hosts):
    kvm01, kvm02 = hosts
    Host.objects.filter(pk=kvm02.pk).update(memory_reserved_mib=16384 - 9 * 1024)  # room for 9 GiB
    kvm02 = Host.objects.get(pk=kvm02.pk)
    big1, big2 = Domain.objects.get(name="big1"), Domain.objects.get(name="big2")
    assert capacity_results(kvm02, Guest.of(big2))[0].result == "pass"
    incoming(big1, kvm02)
    memory, _ = capacity_results(kvm02, Guest.of(big2))
    assert memory.result == "fail"
    assert "already promised to the guests it runs and the one on its way there" in memory.message


def test_free_memory_now_still_matters(hosts):
    kvm01, _ = hosts
    memory, _ = capacity_results(kvm01, Guest("new", 1 * GiB), free=512 * MiB)
    assert memory.result == "fail" and "512.0 MiB of memory free now" in memory.message


def test_too_many_vcpus_only_warn(hosts):
    kvm01, _ = hosts
    Host.objects.filter(pk=kvm01.pk).update(cpu_ratio=1.0)  # 4 CPUs, 4 vCPUs promised
    memory, vcpus = capacity_results(Host.objects.get(pk=kvm01.pk), Guest("new", 1 * GiB, vcpus=2))
    assert memory.result == "pass"
    assert vcpus.result == "warn"
    assert "would run 6 vCPUs on its 4 CPUs, more than its vCPU allocation ratio of 1 allows (4)" in vcpus.message


def test_a_guest_on_huge_pages_needs_pages_of_its_size(tmp_path, hosts):
    kvm01, _ = hosts
    hp = make_host(tmp_path, "kvm03", [("pinned", "running", 1024, 1024, 1, 2048)])
    assert Domain.objects.get(name="pinned").hugepage_kib == 2048
    assert capacity.for_host(hp).memory_committed == 0, "its memory comes from the pool"
    guest = Guest("db", 1 * GiB, hugepage_kib=2048)
    (pages, _) = capacity_results(hp, guest)
    assert pages.name == "hugepages" and pages.result == "fail"
    assert "kvm03 has none of that size" in pages.message
    Host.objects.filter(pk=hp.pk).update(hugepages={"2048": 1024})  # 2 GiB, 1 GiB promised to "pinned"
    hp = Host.objects.get(pk=hp.pk)
    assert capacity_results(hp, guest)[0].result == "pass"
    Host.objects.filter(pk=hp.pk).update(hugepages={"2048": 1000})
    pages, _ = capacity_results(Host.objects.get(pk=hp.pk), guest)
    assert pages.result == "fail"
    assert "512 of its 1000 huge pages of 2.0 MiB are already promised" in pages.message
    assert "db needs 512" in pages.message


def test_in_flight_names_the_migration_states_that_hold_a_claim():
    assert set(capacity.IN_FLIGHT) == {Status.CHECKING, Status.RUNNING}


def test_the_api_shows_committed_against_capacity_and_operators_set_the_reserve(api, operator, viewer, hosts):
    kvm01, kvm02 = hosts
    incoming(Domain.objects.get(name="big1"), kvm02)
    api.force_authenticate(viewer)
    listed = {h["name"]: h for h in api.get("/api/hosts/").json()["results"]}
    cap = listed["kvm02"]["capacity"]
    assert (cap["memory_committed"], cap["memory_incoming"]) == (8 * GiB, 6 * GiB)
    assert (cap["memory_capacity"], cap["incoming"], cap["vcpus_committed"]) == (15 * GiB, 1, 3)
    assert listed["kvm02"]["memory_reserved_mib"] is None, "empty: the default"
    assert api.patch(f"/api/hosts/{kvm02.pk}/", {"memory_reserved_mib": 4096}, format="json").status_code == 403

    api.force_authenticate(operator)
    response = api.patch(f"/api/hosts/{kvm02.pk}/", {"memory_reserved_mib": 4096, "memory_ratio": 1.5}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["capacity"]["memory_capacity"] == int(12 * GiB * 1.5)
    assert Host.objects.get(pk=kvm02.pk).memory_reserved_mib == 4096
    response = api.patch(f"/api/hosts/{kvm02.pk}/", {"memory_ratio": 0}, format="json")
    assert response.status_code == 400 and "memory_ratio" in response.json()


def test_the_host_page_and_the_dashboard_show_committed_against_capacity(client, viewer, hosts):
    kvm01, kvm02 = hosts
    incoming(Domain.objects.get(name="big2"), kvm02)
    client.force_login(viewer)
    page = page_text(client, "/hosts/kvm02/")
    assert "8.0 GiB committed of 15.0 GiB (53 %)" in page
    assert "6.0 GiB on 1 migration on the way in" in page
    assert 'class="running" data-percent="13"' in page and 'class="incoming" data-percent="40"' in page
    assert "1.0 GiB reserved for the host" in page
    dashboard = page_text(client, "/")
    assert "12.0 GiB committed of 15.0 GiB (80 %)" in dashboard  # kvm01
    assert "8.0 GiB committed of 15.0 GiB (53 %)" in dashboard


def test_an_over_committed_host_says_by_how_much(client, viewer, hosts):
    kvm01, _ = hosts
    Host.objects.filter(pk=kvm01.pk).update(memory_reserved_mib=8192)  # 8 GiB for guests, 12 promised
    client.force_login(viewer)
    page = page_text(client, "/hosts/kvm01/")
    assert 'bar stacked red"' in page and "over by 4.0 GiB" in page


def test_the_admin_edits_the_capacity_settings(client, owner, hosts):
    kvm01, _ = hosts
    client.force_login(owner)
    page = page_text(client, f"/admin/hosts/host/{kvm01.pk}/change/")
    for field in ("memory_reserved_mib", "memory_ratio", "cpu_ratio"):
        assert f'name="{field}"' in page
    assert "committed of 15.0 GiB" in page
    # The bar is drawn there too: the CSP forbids style attributes, so its
    # widths come from bars.js and its look from bars.css, which the admin loads.
    assert 'class="bar stacked' in page and "data-percent=" in page
    assert "/static/bars.js" in page and "/static/bars.css" in page


@pytest.mark.processes
@pytest.mark.parametrize(
    "value, says",
    [("lots", "KVMWEB_MEMORY_ALLOCATION_RATIO must be a number, not 'lots'."), ("0", "must be at least 0.1, not 0")],
)
def test_a_malformed_default_ratio_stops_the_program_with_what_is_wrong(value, says):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import kvmweb.settings"],
        env={**os.environ, "KVMWEB_MEMORY_ALLOCATION_RATIO": value},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert says in result.stderr


def test_prometheus_gets_each_hosts_committed_memory_and_capacity(client, hosts, settings):
    from tests.test_metrics import TOKEN, scrape, value

    settings.KVMWEB_METRICS_TOKEN = TOKEN
    kvm01, kvm02 = hosts
    incoming(Domain.objects.get(name="big1"), kvm02)
    samples = scrape(client)
    assert value(samples, "kvmweb_host_memory_committed_bytes", host="kvm02") == 8 * GiB
    assert value(samples, "kvmweb_host_memory_capacity_bytes", host="kvm02") == 15 * GiB
    assert value(samples, "kvmweb_host_memory_committed_bytes", host="kvm01") == 12 * GiB
    assert value(samples, "kvmweb_host_vcpus_committed", host="kvm02") == 3
    assert value(samples, "kvmweb_host_vcpu_capacity", host="kvm02") == 16


@pytest.mark.parametrize(
    "committed_gib, level",
    [(0, ""), (12, ""), (14, "orange"), (15, "red"), (16, "red")],
)
def test_the_bar_turns_orange_when_filling_and_red_when_full(committed_gib, level):
    figures = capacity.Capacity(
        memory_total=16 * GiB,
        memory_reserved=1 * GiB,
        hugepage_pool=0,
        memory_ratio=1.0,
        memory_committed=committed_gib * GiB,
        cpu_count=4,
        cpu_ratio=4.0,
        vcpus_committed=0,
    )
    assert figures.level == level


def test_a_host_never_read_has_an_empty_grey_bar():
    empty = capacity.Capacity(0, 1 * GiB, 0, 1.0, 0, 0, 4.0, 0)
    assert (empty.memory_capacity, empty.level, empty.bar) == (0, "", {"running": 0, "incoming": 0})


def test_the_huge_page_pool_is_read_from_each_numa_cell_past_its_normal_pages():
    import xml.etree.ElementTree as ET

    import libvirt

    from hosts.libvirt.inventory import _hugepages

    # libvirt's own test host: cell 0 has 4 KiB normal pages, cell 1 has 8 KiB ones.
    conn = libvirt.open("test:///default")
    caps = ET.fromstring(conn.getCapabilities())
    conn.close()
    assert _hugepages(caps) == {}, "normal pages are not huge ones"
    cells = caps.findall("host/topology/cells/cell")
    for cell, size, count in ((cells[0], "2048", "512"), (cells[1], "2048", "256"), (cells[1], "1048576", "2")):
        next(p for p in cell.iterfind("pages") if p.get("size") == size).text = count
    assert _hugepages(caps) == {"2048": 768, "1048576": 2}


def test_the_prepared_queries_give_what_django_builds_each_time(hosts):
    """for_host and with_counts compile their SQL once per process and bind new
    values at each call: the figures must be those of the query built anew."""
    kvm01, kvm02 = hosts
    migration = incoming(Domain.objects.get(name="big1"), kvm02, Status.CHECKING)
    fields = ("memory_committed", "memory_incoming", "vcpus_committed", "incoming_count")

    def built(host, exclude=None):
        row = capacity.with_committed(Host.objects.filter(pk=host.pk), exclude).get()
        return tuple(getattr(row, f) for f in fields)

    for host in (kvm01, kvm02, kvm01):
        for exclude in (None, migration.pk):
            cap = capacity.for_host(host, exclude)
            got = (cap.memory_committed, cap.memory_incoming, cap.vcpus_committed, cap.incoming)
            assert got == built(host, exclude), (host.name, exclude)
    assert built(kvm02) != built(kvm02, migration.pk), "the excluded claim must make a difference here"
    listed = {
        h.name: (h.domain_count, h.running_count, *(getattr(h, f) for f in fields)) for h in capacity.with_counts()
    }
    assert list(listed) == ["kvm01", "kvm02"]
    # Integers on every database, as the ORM gives them (PostgreSQL's SUM is a numeric).
    assert all(type(v) is int for row in listed.values() for v in row)
    assert listed == {"kvm01": (3, 2, *built(kvm01)), "kvm02": (2, 1, *built(kvm02))}
