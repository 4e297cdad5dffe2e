"""Cold migration: shut down, copy, verify, define, start; and nothing lost when it goes wrong."""

import pytest

from migrations_app.engine.cold import ColdMigration
from tests.migration_helpers import domain, register_lab, request, run, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def defined_on(lab, host, name):
    with lab.connection(host) as conn:
        return name in [d.name() for d in conn.listAllDomains()]


def volume_names(lab, host, pool="local"):
    with lab.connection(host) as conn:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return {v.name() for v in p.listAllVolumes()}


def test_a_running_guest_is_shut_down_copied_verified_and_started_on_the_target(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="local")
    response = request(
        api,
        operator,
        domain(name),
        hosts["kvm02"],
        mode="cold",
        storage="copy",
        target_pool="local",
    )
    assert response.status_code == 201, response.content

    migration = run(response.json()["id"])

    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    assert migration.was_running is True
    assert lab.where(name) == ["kvm02"]
    wait_for(lambda: lab.last_tick(name), what="the guest to tick on the target")
    assert not defined_on(lab, "kvm01", name)
    assert f"{name}.qcow2" in volume_names(lab, "kvm02")
    assert f"{name}.qcow2" not in volume_names(lab, "kvm01")  # removed once verified, by default
    messages = [e["message"] for e in migration.events]
    order = [
        next(i for i, m in enumerate(messages) if m.startswith(prefix))
        for prefix in ("Asking", "Copying", "Verified", "Defined", "Started", "Removed")
    ]
    assert order == sorted(order), messages
    # A clean ACPI shutdown, not a forced power-off.
    assert not any("powering it off" in m for m in messages)
    assert migration.stats["data_transferred"] < migration.stats["disk_total"]  # sparse
    # Its page: its own figures (no downtime, no passes) and a chart of the bytes copied.
    shown = migration.as_event()["display"]
    assert [row["label"] for row in shown["outcome"]] == ["Total time", "Disk data copied"]
    assert shown["chart"]["points"].count(",") >= 3 and shown["chart"]["remaining_points"] == ""


def test_a_shut_off_guest_on_shared_storage_is_redefined_on_the_target(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared", start=False)
    response = request(api, operator, domain(name), hosts["kvm02"], mode="cold")
    migration = run(response.json()["id"])

    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    assert defined_on(lab, "kvm02", name) and not defined_on(lab, "kvm01", name)
    assert lab.where(name) == []  # it was off, and stays off
    assert domain(name, host="kvm02").host.name == "kvm02"


def test_a_copy_damaged_on_the_target_leaves_the_source_untouched(api, operator, lab, lab_guest, hosts, monkeypatch):
    name = lab_guest("kvm01", disk="local")

    verify = ColdMigration.verify

    def damage_then_verify(cold):
        # Overwrite the start of the fresh copy on the target's storage,
        # between the copy and its verification.
        with lab.connection("kvm02") as conn:
            vol = conn.storageVolLookupByPath(cold.created_volumes[0])
            stream = conn.newStream(0)
            vol.upload(stream, 0, 4096, 0)
            stream.send(b"\xff" * 4096)
            stream.finish()
        verify(cold)

    monkeypatch.setattr(ColdMigration, "verify", damage_then_verify)
    response = request(
        api,
        operator,
        domain(name),
        hosts["kvm02"],
        mode="cold",
        storage="copy",
        target_pool="local",
    )
    migration = run(response.json()["id"])

    assert migration.status == "failed"
    assert migration.error_code == "verify"
    assert "differs from the source" in migration.error
    assert f"{name} was started again on kvm01" in migration.error
    assert lab.where(name) == ["kvm01"]
    assert defined_on(lab, "kvm01", name) and not defined_on(lab, "kvm02", name)
    assert f"{name}.qcow2" in volume_names(lab, "kvm01")
    assert f"{name}.qcow2" not in volume_names(lab, "kvm02")  # the bad copy is gone


def test_a_target_that_dies_during_the_copy_leaves_the_guest_running_on_the_source(
    api, operator, lab, lab_guest, hosts, monkeypatch
):
    name = lab_guest("kvm01", disk="local")
    verify = ColdMigration.verify

    def lose_target_then_verify(cold):
        lab.stop_libvirtd("kvm02")  # after the copy, before its verification
        verify(cold)

    monkeypatch.setattr(ColdMigration, "verify", lose_target_then_verify)
    response = request(api, operator, domain(name), hosts["kvm02"], mode="cold", storage="copy", target_pool="local")
    try:
        migration = run(response.json()["id"])
    finally:
        lab.start_libvirtd("kvm02")

    assert migration.status == "failed", migration.error
    assert f"{name} was started again on kvm01" in migration.error
    assert lab.where(name) == ["kvm01"]
    assert defined_on(lab, "kvm01", name) and not defined_on(lab, "kvm02", name)


def test_a_guest_that_will_not_shut_down_is_left_running_unless_forcing_was_chosen(
    api, operator, lab, lab_guest, hosts, monkeypatch
):
    name = lab_guest("kvm01", disk="shared")
    # A guest that ignores the power button, as a hung one would.
    from hosts.libvirt import Connection

    monkeypatch.setattr(Connection, "shutdown", lambda self, uuid: None)
    response = request(api, operator, domain(name), hosts["kvm02"], mode="cold", shutdown_timeout=5)
    migration = run(response.json()["id"])

    assert migration.status == "failed"
    assert "did not shut down within 5 s" in migration.error
    assert "choose to force it off" in migration.error
    assert f"{name} is still running on kvm01" in migration.error
    assert lab.where(name) == ["kvm01"]

    response = request(api, operator, domain(name), hosts["kvm02"], mode="cold", shutdown_timeout=5, force_off=True)
    migration = run(response.json()["id"])
    assert migration.status == "succeeded", migration.error
    assert any("powering it off, as the request allowed" in e["message"] for e in migration.events)
    assert lab.where(name) == ["kvm02"]
