"""Placement rules: what the planner and the pre-flight check read of them,
and the audit of every change (the API and the admin both go through here)."""

import uuid

from hosts.models import Domain
from migrations_app.models import AuditAction, AuditEntry

from .models import PlacementRule


def enabled():
    """The enabled rules as the planner takes them (planner.Rule)."""
    rules = PlacementRule.objects.filter(enabled=True).prefetch_related("hosts")
    return [r.as_fact([h.pk for h in r.hosts.all()]) for r in rules]


def where(rules):
    """{uuid: (host id, name)} of every VM the rules name that the inventory knows."""
    uuids = {u for r in rules for u in r.vms}
    if not uuids:
        return {}
    return {
        str(uuid): (host_id, name)
        for uuid, host_id, name in Domain.objects.filter(uuid__in=uuids).values_list("uuid", "host_id", "name")
    }


def describe(rule):
    """The rule in a line of the audit log: its VMs by name where the inventory knows them."""
    names = dict(Domain.objects.filter(uuid__in=rule.vms).values_list("uuid", "name"))
    vms = ", ".join(sorted(names.get(_uuid(u)) or str(u) for u in rule.vms))
    text = f"{rule.get_kind_display().lower()}: {vms}"
    if rule.kind == "pinned":
        text += " on " + ", ".join(sorted(h.name for h in rule.hosts.all()))
    return text


def _uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def audit(user, verb, rule):
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
