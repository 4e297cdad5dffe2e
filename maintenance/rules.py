"""Placement rules: what the planner and the pre-flight check read of them,
and the audit of every change (the API and the admin both go through here)."""

import uuid
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from hosts.models import Domain, Host
from migrations_app.checks import FAIL, PASS, WARN, CheckInput, Checks
from migrations_app.models import AuditAction, AuditEntry

from . import planner
from .models import PlacementRule


def enabled() -> list[planner.Rule]:
    """The enabled rules as the planner takes them (planner.Rule)."""
    rules = PlacementRule.objects.filter(enabled=True).prefetch_related("hosts")
    return [r.as_fact([h.pk for h in r.hosts.all()]) for r in rules]


def where(rules: Iterable[planner.Rule]) -> dict[str, tuple[int, str]]:
    """{uuid: (host id, name)} of every VM the rules name that the inventory knows."""
    uuids = {u for r in rules for u in r.vms}
    if not uuids:
        return {}
    return {
        str(uuid): (host_id, name)
        for uuid, host_id, name in Domain.objects.filter(uuid__in=uuids).values_list("uuid", "host_id", "name")
    }


def check_move(sender: Any, checks: Checks, values: CheckInput, **kwargs: Any) -> None:
    """The pre-flight check ``placement_rules`` (migrations_app.checks.placement_check):
    a move that breaks a placement rule fails, naming the rule. Only VMs that a
    rule names get this check."""
    v = values
    uuid = str(v.uuid)
    mine = [r for r in enabled() if uuid in r.vms]
    if not mine:
        return
    hosts = {h.pk: planner.HostFacts(id=h.pk, name=h.name) for h in Host.objects.only("name")}
    target_facts = hosts.get(v.target.pk) or planner.HostFacts(id=v.target.pk, name=v.target.name)
    why = planner.rule_refusal(mine, uuid, v.name, target_facts, where(mine), hosts)
    names = ", ".join(sorted(r.name for r in mine))
    reason = (v.rule_override or "").strip()
    if why and reason:
        checks.add(
            "placement_rules",
            WARN,
            f"Moving {v.name} to {v.target.name} breaks a placement rule: {why}. The operator overrides it: {reason}",
        )
    elif why:
        checks.add(
            "placement_rules",
            FAIL,
            f"Moving {v.name} to {v.target.name} breaks a placement rule: {why}. Choose a host the rule "
            "allows, or change the rule first.",
        )
    else:
        checks.add("placement_rules", PASS, f"{v.target.name} keeps {v.name}'s placement rules ({names}).")


def describe(rule: PlacementRule) -> str:
    """The rule in a line of the audit log: its VMs by name where the inventory knows them."""
    names = dict(Domain.objects.filter(uuid__in=rule.vms).values_list("uuid", "name"))
    vms = ", ".join(sorted(names.get(_uuid(u)) or str(u) for u in rule.vms))
    text = f"{rule.get_kind_display().lower()}: {vms}"
    if rule.kind == "pinned":
        text += " on " + ", ".join(sorted(h.name for h in rule.hosts.all()))
    return text


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def audit(user: AbstractBaseUser | AnonymousUser, verb: str, rule: PlacementRule) -> None:
    """``verb``: created, changed or removed."""
    AuditEntry.record(
        AuditAction.RULE,
        f"{user.get_username() or 'kvmweb'} {verb} placement rule {rule.name} ({describe(rule)})"
        + ("" if rule.enabled or verb == "removed" else "; it is disabled"),
        user=user,
        rule=rule.name,
        kind=rule.kind,
        vms=[str(u) for u in rule.vms],
        hosts=sorted(h.pk for h in rule.hosts.all()),
        enabled=rule.enabled,
    )
