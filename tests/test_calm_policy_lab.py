"""A guest that will not converge, on the lab: the audit log gets the policy's
decisions only, one entry each, and the migration keeps every event it had."""

import re
from datetime import datetime

import pytest
from django.utils.html import escape

from migrations_app import policies
from migrations_app.models import AuditEntry
from migrations_app.policies import DowntimeStep, Policy
from tests.migration_helpers import domain, register_lab, request, run

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

# What the policy decides; everything else it sees is an observation.
DECISIONS = {"downtime", "auto_converge", "postcopy", "postcopy_unsupported", "postcopy_failed", "deadline"}


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


@pytest.fixture
def calm_policy():
    policy = Policy(
        name="test-calm",
        label="Slow deadline (tests)",
        description="Ramps the downtime, lets QEMU slow the guest, gives up after 40 s.",
        downtime_steps=(DowntimeStep(0, 50), DowntimeStep(4, 80), DowntimeStep(8, 120)),
        auto_converge=True,
        deadline_seconds=40,
    )
    policies.POLICIES[policy.name] = policy
    yield policy
    del policies.POLICIES[policy.name]


def test_a_migration_that_will_not_converge_audits_decisions_only_and_keeps_every_event(
    api, client, operator, lab, lab_guest, hosts, calm_policy
):
    # 30 MiB/s of dirtying against a 30 MiB/s link: the rates sit around each
    # other for 40 s, where the old watch flapped every second or two.
    name = lab_guest("kvm01", disk="shared", memory_mib=384, dirty_mib=64, dirty_rate_mib=30)
    pk = request(api, operator, domain(name), hosts["kvm02"], policy="test-calm", bandwidth_mib=30).json()["id"]

    migration = run(pk)

    messages = [e["message"] for e in migration.events]
    assert migration.status == "failed" and migration.error_code == "not_converging", messages
    assert lab.where(name) == ["kvm01"]

    # The audit log: the request, its checks, the start, the end, and one entry per decision.
    entries = list(AuditEntry.objects.filter(migration=migration).order_by("at", "id"))
    assert {e.action for e in entries} <= {"request", "check", "start", "policy", "failed"}, [e.action for e in entries]
    audited = [e for e in entries if e.action == "policy"]
    assert all(e.data.get("decision") in DECISIONS for e in audited), [e.message for e in audited]
    decided = [e for e in migration.events if e.get("decision") in DECISIONS]
    assert [e.message for e in audited] == [e["message"] for e in decided]
    assert [e.data["downtime_ms"] for e in audited if e.data["decision"] == "downtime"] == [50, 80, 120]
    assert audited[-1].data["decision"] == "deadline"
    throttles = [e.data["throttle"] for e in audited if e.data["decision"] == "auto_converge"]
    assert throttles == sorted(set(throttles)), "one entry per step of the throttle, not per sample"
    # 80 samples: far fewer entries than that.
    assert len(audited) <= 3 + len(throttles) + 1

    # How the transfer went: said calmly, in the migration's log only.
    told = [e for e in migration.events if "convergence" in e]
    assert told, messages
    assert not any("dirties" in e.message for e in entries)
    times = [datetime.fromisoformat(e["at"]) for e in told]
    assert all((b - a).total_seconds() >= 9.5 for a, b in zip(times, times[1:], strict=False)), messages
    for e in told:
        send, dirty = (float(x) for x in re.findall(r"([\d.]+) MiB/s", e["message"])[:2])
        said = e["message"].split(": ", 1)[1]
        if said.startswith("not converging"):
            assert dirty >= send, e["message"]
        else:
            assert dirty <= send, e["message"]  # rounded to 0.1 MiB/s

    print(f"{len(audited)} decisions audited, {len(told)} sentences on convergence, {len(migration.events)} events")

    # Every event stays, the first steps included, on its events page.
    client.force_login(operator)
    shown = []
    page = 1
    while True:
        html = client.get(f"/migrations/{pk}/events/?page={page}").content.decode()
        shown += re.findall(r"</time> (.*?)</li>", html)
        if f"page={page + 1}" not in html:
            break
        page += 1
    assert len(shown) == len(migration.events) >= 8
    assert shown == [escape(e["message"]) for e in migration.events]
    assert any(m.startswith("Starting the transfer with libvirt flags") for m in shown)
