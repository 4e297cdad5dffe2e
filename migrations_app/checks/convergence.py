"""Whether a live migration will converge: the bandwidth against the policy's
deadline, and how fast the VM dirtied its memory when it last moved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.formatting import size

from ..models import Migration, Mode, Status
from ..policies import get_policy, outpaced
from .base import PASS, WARN, CheckInput, Checks, MiB

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_convergence(
    checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
) -> None:
    if v.mode != Mode.LIVE:
        return
    policy = get_policy(v.policy)
    if policy is None:
        raise ValueError(f"{v.name}'s migration names an unknown policy {v.policy!r}")
    memory = dom.info.memory
    bandwidth = v.bandwidth_mib
    last = (
        Migration.objects.filter(domain_uuid=v.uuid, mode=Mode.LIVE)
        .exclude(stats={})
        .filter(status__in=[Status.SUCCEEDED, Status.FAILED])
        .order_by("-finished_at")
        .first()
    )
    if bandwidth and memory / (bandwidth * MiB) > policy.deadline_seconds:
        checks.add(
            "convergence",
            WARN,
            f"At {bandwidth} MiB/s the first pass over {size(memory)} of memory alone takes "
            f"{memory / (bandwidth * MiB):.0f} s, longer than the policy's deadline of "
            f"{policy.deadline_seconds} s: it will be aborted. Raise the bandwidth limit.",
        )
        return
    if last and last.stats.get("dirty_rate_bps") and last.stats.get("speed_bps"):
        dirty = last.stats["dirty_rate_bps"]
        speed = min(last.stats["speed_bps"], (bandwidth or 1 << 40) * MiB)
        if outpaced(dirty, speed):
            checks.add(
                "convergence",
                WARN,
                f"When it last moved (migration #{last.pk}) {v.name} dirtied memory at "
                f"{size(dirty)}/s while {size(last.stats['speed_bps'])}/s could be sent: it may not "
                "converge. Choose the 'Make it converge' policy, raise the bandwidth, or migrate it cold.",
            )
            return
    checks.add(
        "convergence",
        PASS,
        f"kvmweb watches the dirty rate from the second pass and applies the "
        f"'{policy.label}' policy; it gives up after {policy.deadline_seconds} s, leaving the VM "
        "on the source.",
    )
