"""Measure, predict, choose, on the lab's real guests: the dirty rate is known
in time, a migration predicted not to converge is refused or moved another
way with the reason, and Automatic moves a guest that cannot converge by post-copy."""

import pytest

from migrations_app import measure
from migrations_app.models import AuditEntry
from tests.migration_helpers import domain, register_lab, request, run

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
# What the lab guests' dirtier is told to touch, in MiB/s.
DIRTY = 24


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def within(value, expected, share=0.30):
    return abs(value - expected) <= share * expected


def test_the_dirty_rate_of_a_guest_dirtying_24_mib_s_is_known_before_the_start_and_after_the_first_pass(
    api, operator, lab, lab_guest, hosts
):
    # The region it rewrites (160 MiB) is larger than what it dirties in a pass
    # (24 MiB/s x ~4 s at 64 MiB/s): each rewrite is a new dirty page, as in a busy guest.
    name = lab_guest("kvm01", disk="shared", memory_mib=256, dirty_mib=160, dirty_rate_mib=DIRTY)
    pk = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=64).json()["id"]

    migration = run(pk)

    assert migration.status == "succeeded", (migration.error, [e["message"] for e in migration.events])
    before = migration.prediction["inputs"]["dirty_rate_bps"]
    assert before["source"].startswith("libvirt page sampling"), before
    assert within(before["value"], DIRTY * MiB), before
    # By the end of the first pass: libvirt's own figure for pass 2 on.
    passes = migration.progress["pass_dirty_rates"]
    second = [bps for it, bps in passes if it == 2]
    assert second and within(second[0], DIRTY * MiB), passes
    assert migration.prediction.get("refined"), migration.events
    assert any(e.get("refined") and e["message"].startswith("After the first pass") for e in migration.events)
    # Predicted and actual, both kept.
    outcome = migration.prediction_outcome()
    assert outcome is not None and outcome["seconds"][1] > 0
    assert lab.where(name) == ["kvm02"]


def test_a_migration_predicted_not_to_converge_without_post_copy_is_refused_with_the_advice_to_move_it_cold(
    api, operator, lab, lab_guest, hosts
):
    # The lab's guests are software-emulated: Automatic does not use post-copy for them (measure.py).
    name = lab_guest("kvm01", disk="shared", memory_mib=256, dirty_mib=160, dirty_rate_mib=DIRTY)
    pk = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=8).json()["id"]

    migration = run(pk)

    assert migration.status == "failed" and migration.error_code == "preflight", migration.error
    check = next(c for c in migration.checks if c["name"] == "prediction")
    assert check["result"] == "fail"
    assert check["message"].startswith("Automatic refuses to move it live: pre-copy would not converge"), check
    assert "post-copy is not used for a software-emulated guest" in check["message"]
    assert check["message"].endswith("move it cold, or raise the bandwidth."), check
    assert migration.prediction["method"] == "cold"
    assert lab.where(name) == ["kvm01"]

    # A fixed policy is the operator's choice: the prediction warns, in one sentence, and does not refuse.
    strict = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=8, policy="strict", dry_run=True)
    check = next(c for c in strict.json()["checks"] if c["name"] == "prediction")
    assert check["result"] == "warn" and check["message"].startswith("Will not converge at 8 MiB/s: the guest dirties")


def test_automatic_moves_a_guest_that_cannot_converge_by_post_copy_and_it_arrives(
    api, operator, lab, lab_guest, hosts, monkeypatch
):
    # Allowed here for the lab's software-emulated guests, which Automatic otherwise spares post-copy.
    monkeypatch.setattr(measure, "POSTCOPY_VIRT_TYPES", frozenset({"kvm", "qemu"}))
    name = lab_guest("kvm01", disk="shared", memory_mib=256, dirty_mib=128, dirty_rate_mib=DIRTY)
    before = lab.wait_ticking(name)
    # 24 MiB/s dirtied against 12 MiB/s sent: pre-copy cannot converge, auto-converge would
    # have to slow the guest by far more than half.
    pk = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=12).json()["id"]

    migration = run(pk)

    events = [e["message"] for e in migration.events]
    assert migration.status == "succeeded", (migration.error, events)
    assert migration.prediction["method"] == "postcopy", migration.prediction
    check = next(c for c in migration.checks if c["name"] == "prediction")
    assert check["message"].startswith("Automatic chose post-copy: pre-copy would not converge"), check
    assert "postcopy" in migration.flags
    assert any(e.startswith("Switched to post-copy") for e in events), events
    assert AuditEntry.objects.filter(migration=migration, data__decision="postcopy").exists()
    chose = AuditEntry.objects.get(migration=migration, data__decision="automatic")
    assert chose.data["method"] == "postcopy" and chose.message.startswith("Automatic: post-copy, because pre-copy")
    assert lab.where(name) == ["kvm02"]
    after = lab.wait_ticking(name)
    if after[1] <= before[1]:
        # QEMU 7.2's post-copy of a software-emulated guest: in 4 runs of 9 the guest's kernel
        # panicked on the target (docs/prediction.md). Why Automatic spares such guests post-copy.
        with open(lab.serial_log("kvm02", name), errors="replace") as log:
            panic = [line for line in log.read().splitlines() if "panic" in line.lower()]
        pytest.xfail(f"the guest restarted on kvm02 after post-copy ({before} -> {after}): {panic[-1:]}")
