"""Convergence policies, as data.

A live migration converges when the memory still to send can be sent within
the allowed downtime. When the guest dirties memory faster than it can be
sent, a policy decides what to do, step by step: allow more downtime, slow the
guest down (auto-converge), switch to post-copy if the hosts support it, and
give up at a deadline, leaving the guest running on the source.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DowntimeStep:
    after_seconds: float
    downtime_ms: int


@dataclass(frozen=True)
class Policy:
    name: str
    label: str
    description: str
    downtime_steps: tuple[DowntimeStep, ...] = field(default_factory=tuple)
    # Let QEMU slow the guest's CPUs down when it dirties memory faster than it
    # can be sent (auto-converge). QEMU takes this only when the migration
    # starts and then throttles by itself, in steps, as long as it falls behind.
    auto_converge: bool = False
    # Switch to post-copy from this iteration on, if the hosts support it; None: never.
    postcopy_iteration: int | None = None
    # Abort after this many seconds of transfer; the guest stays on the source.
    deadline_seconds: int = 600

    @property
    def initial_downtime_ms(self):
        return self.downtime_steps[0].downtime_ms if self.downtime_steps else 300

    def downtime_at(self, elapsed: float) -> int:
        """The downtime the policy allows ``elapsed`` seconds into the transfer."""
        allowed = self.initial_downtime_ms
        for step in self.downtime_steps:
            if elapsed >= step.after_seconds:
                allowed = step.downtime_ms
        return allowed


POLICIES = {
    p.name: p
    for p in [
        Policy(
            name="default",
            label="Balanced",
            description="Start at 100 ms of downtime and allow up to 1 s as time passes; let QEMU "
            "slow the guest down if it falls behind; give up after 10 minutes.",
            downtime_steps=(
                DowntimeStep(0, 100),
                DowntimeStep(10, 300),
                DowntimeStep(20, 500),
                DowntimeStep(30, 1000),
            ),
            auto_converge=True,
            deadline_seconds=600,
        ),
        Policy(
            name="strict",
            label="Minimal downtime",
            description="Never pause the guest for more than 100 ms and never slow it down; give up "
            "after 5 minutes if it does not converge.",
            downtime_steps=(DowntimeStep(0, 100),),
            deadline_seconds=300,
        ),
        Policy(
            name="converge",
            label="Make it converge",
            description="Let QEMU slow the guest down, allow up to 2 s of downtime, switch to "
            "post-copy from the 4th pass where the hosts support it; give up after 15 minutes.",
            downtime_steps=(
                DowntimeStep(0, 300),
                DowntimeStep(5, 1000),
                DowntimeStep(15, 2000),
            ),
            auto_converge=True,
            postcopy_iteration=4,
            deadline_seconds=900,
        ),
    ]
}

DEFAULT_POLICY = "default"

# Memory dirtied at 90% of the sending rate or more: what is left to send
# shrinks too slowly to ever fit in the allowed downtime.
OUTPACED_RATIO = 0.9


def outpaced(dirty_rate_bps: int, send_rate_bps: int) -> bool:
    return bool(send_rate_bps) and dirty_rate_bps >= OUTPACED_RATIO * send_rate_bps


def get_policy(name: str | None) -> "Policy | None":
    return POLICIES.get(name or DEFAULT_POLICY)


def policy_choices():
    return [(p.name, p.label) for p in POLICIES.values()]
