"""One VM defined on several hosts: where it runs wins, whatever order the
hosts are read in; the other definitions are listed, not lost."""

import itertools

import pytest

from hosts.models import Domain, DomainDefinition, Host, HostStatus
from hosts.sync import sync_host, sync_hosts
from migrations_app.models import AuditEntry
from tests.migration_helpers import migration_for
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db

WEB01 = domain_uuid("kvm02", 1)


def hand_migrated(tmp_path):
    """The usual way by hand: web01 moved live from kvm02 to kvm01 without
    --undefinesource, so kvm02 keeps it shut off. kvm03 has only its own VM."""
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running"), ("db01", domain_uuid("kvm01", 1), "running")])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff")])
    write_host(tmp_path, "kvm03", domains=[("mail01", domain_uuid("kvm03", 1), "shutoff")])


def register(tmp_path, *names):
    return [Host.objects.create(name=n, uri=f"test://{tmp_path}/{n}.xml") for n in names]


@pytest.mark.parametrize("order", list(itertools.permutations(["kvm01", "kvm02", "kvm03"])))
def test_a_hand_migrated_vm_is_where_it_runs_whatever_the_order_of_the_reads(tmp_path, order):
    hand_migrated(tmp_path)
    hosts = {h.name: h for h in register(tmp_path, "kvm01", "kvm02", "kvm03")}

    results = []
    for _round in range(3):
        results += [sync_host(hosts[name]) for name in order]

    web01 = Domain.objects.get(uuid=WEB01)
    assert web01.host.name == "kvm01" and web01.state == "running"
    assert [(d.host.name, d.state) for d in web01.other_definitions] == [("kvm02", "shutoff")]
    assert not web01.split_brain
    assert Domain.objects.count() == 3
    # Nothing "moves" back and forth between rounds.
    assert sum(r.moved for r in results) == 0
    assert not AuditEntry.objects.exists()


def test_the_same_state_gives_the_same_rows_in_any_order(tmp_path):
    hand_migrated(tmp_path)
    seen = set()
    for order in itertools.permutations(["kvm01", "kvm02", "kvm03"]):
        Host.objects.all().delete()
        hosts = {h.name: h for h in register(tmp_path, "kvm01", "kvm02", "kvm03")}
        for name in order:
            sync_host(hosts[name])
        seen.add(
            tuple(
                sorted(Domain.objects.values_list("uuid", "name", "host__name", "state", "persistent", "split_brain"))
            )
        )
    assert len(seen) == 1


def test_a_vm_that_stops_where_it_ran_stays_where_it_ran(tmp_path):
    """Defined shut off on two hosts: it is where it last ran, not where it was read last."""
    hand_migrated(tmp_path)
    kvm01, kvm02, _ = register(tmp_path, "kvm01", "kvm02", "kvm03")
    sync_hosts()
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "shutoff"), ("db01", domain_uuid("kvm01", 1), "running")])

    for host in (kvm01, kvm02, kvm01, kvm02):
        sync_host(host)
        assert Domain.objects.get(uuid=WEB01).host == kvm01


def test_a_vm_seen_running_on_another_host_moves_and_is_audited_as_an_outside_move(tmp_path):
    write_host(tmp_path, "kvm01", domains=[])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    kvm01, kvm02 = register(tmp_path, "kvm01", "kvm02")
    sync_hosts()
    row = Domain.objects.get(uuid=WEB01)

    # virsh migrate --live web01 qemu+tcp://kvm01/system, by hand.
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff")])
    result = sync_host(kvm01)

    moved = Domain.objects.get(uuid=WEB01)
    assert result.moved == 1 and moved.pk == row.pk and moved.host == kvm01
    # kvm02's last word, older than the move, said "running": not a split brain.
    assert not moved.split_brain
    sync_host(kvm02)
    entry = AuditEntry.objects.get()
    assert entry.action == "inventory"
    assert entry.message.startswith("web01 moved from kvm02 to kvm01 outside kvmweb (seen ")
    assert (entry.domain_name, entry.source_name, entry.target_name) == ("web01", "kvm02", "kvm01")
    assert entry.data["seen_at"]


def test_a_move_made_by_a_kvmweb_migration_is_not_called_an_outside_move(tmp_path):
    write_host(tmp_path, "kvm01", domains=[])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    kvm01, kvm02 = register(tmp_path, "kvm01", "kvm02")
    sync_hosts()
    migration_for(Domain.objects.get(uuid=WEB01), kvm01, status="running")

    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm02", domains=[])
    sync_hosts()

    assert Domain.objects.get(uuid=WEB01).host == kvm01
    assert not AuditEntry.objects.filter(action="inventory").exists()


def test_a_definition_gone_from_every_host_removes_the_vm(tmp_path):
    hand_migrated(tmp_path)
    kvm01, kvm02, _ = register(tmp_path, "kvm01", "kvm02", "kvm03")
    sync_hosts()

    write_host(tmp_path, "kvm01", domains=[("db01", domain_uuid("kvm01", 1), "running")])
    sync_host(kvm01)
    # web01 still has kvm02's definition: it is there now, shut off.
    web01 = Domain.objects.get(uuid=WEB01)
    assert web01.host == kvm02 and web01.state == "shutoff"

    write_host(tmp_path, "kvm02", domains=[])
    result = sync_host(kvm02)
    assert result.removed == 1
    assert not Domain.objects.filter(uuid=WEB01).exists()
    assert not DomainDefinition.objects.filter(host=kvm02).exists()


@pytest.mark.parametrize("order", [("kvm01", "kvm02"), ("kvm02", "kvm01")])
def test_a_vm_running_on_two_hosts_is_a_split_brain_in_any_order(tmp_path, order):
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    hosts = {h.name: h for h in register(tmp_path, "kvm01", "kvm02")}

    # One round may not tell a split brain from a move (each host's word may
    # predate the other's); the second round always does, in either order.
    for _round in range(2):
        for name in order:
            sync_host(hosts[name])

    web01 = Domain.objects.get(uuid=WEB01)
    assert web01.split_brain
    assert web01.running_on == ["kvm01", "kvm02"]
    assert web01.host.name == "kvm01"
    entry = AuditEntry.objects.get(action="inventory")
    assert "web01 runs on kvm01 and kvm02 at once (split brain)" in entry.message
    assert entry.data["hosts"] == ["kvm01", "kvm02"]

    # One copy is stopped: the alarm ends, and the log says so.
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff")])
    sync_host(hosts["kvm02"])
    web01.refresh_from_db()
    assert not web01.split_brain and web01.host.name == "kvm01"
    assert AuditEntry.objects.filter(action="inventory", message__contains="split brain is over").count() == 1


def test_a_host_that_went_offline_does_not_make_a_split_brain(tmp_path):
    """kvm02 died with web01 running; web01 was restarted on kvm01. kvm02's
    last word is not believed over a host that answers."""
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm01", domains=[])
    kvm01, kvm02 = register(tmp_path, "kvm01", "kvm02")
    sync_hosts()

    kvm02.uri = "qemu+tcp://127.0.0.1:1/system"
    kvm02.save()
    sync_host(kvm02, timeout=2)
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    sync_host(kvm01)
    sync_host(kvm01)

    web01 = Domain.objects.get(uuid=WEB01)
    assert kvm02.status == HostStatus.OFFLINE
    assert web01.host == kvm01 and not web01.split_brain
    # What kvm02 said is kept, as for any host that went away.
    assert DomainDefinition.objects.filter(host=kvm02, domain=web01, state="running").exists()
