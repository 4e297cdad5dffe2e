"""Convergence policies, as data.

A live migration converges when the memory still to send can be sent within
the allowed downtime. When the guest dirties memory faster than it can be
sent, a policy decides what to do, step by step: allow more downtime, slow the
guest down (auto-converge), switch to post-copy if the hosts support it, and
give up at a deadline, leaving the guest running on the source.
"""

from dataclasses import dataclass, field

from django.conf import settings

from core.formatting import size


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
    def initial_downtime_ms(self) -> int:
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

# The policy "Automatic" (the default for new requests since issue 24) is no
# fixed recipe: the pre-flight check ``prediction`` (measure.py) predicts the
# transfer and picks one of the variants below, recording why; the engine then
# runs that variant (engine/outcome.policy_of).
AUTOMATIC = "auto"
POLICIES[AUTOMATIC] = Policy(
    name=AUTOMATIC,
    label="Automatic",
    description="kvmweb measures the guest and the link, predicts the transfer, and picks plain pre-copy, "
    "auto-converge or post-copy (where the hosts support it), or refuses and advises a cold move; the "
    "checks say which and why.",
    downtime_steps=(DowntimeStep(0, 100), DowntimeStep(10, 300), DowntimeStep(20, 500), DowntimeStep(30, 1000)),
    auto_converge=True,
    deadline_seconds=600,
)

_AUTOMATIC_VARIANTS = {
    # Predicted to converge as it is: nothing slows the guest.
    "precopy": Policy(
        name=AUTOMATIC,
        label="Automatic: pre-copy",
        description="Plain pre-copy, predicted to converge.",
        downtime_steps=POLICIES[AUTOMATIC].downtime_steps,
        deadline_seconds=600,
    ),
    "auto_converge": Policy(
        name=AUTOMATIC,
        label="Automatic: auto-converge",
        description="Pre-copy with the guest slowed down as needed, predicted to converge so.",
        downtime_steps=POLICIES[AUTOMATIC].downtime_steps,
        auto_converge=True,
        deadline_seconds=600,
    ),
    # Predicted not to converge: one full pass, then the guest moves and fetches the rest.
    "postcopy": Policy(
        name=AUTOMATIC,
        label="Automatic: post-copy",
        description="One pass of pre-copy, then post-copy.",
        downtime_steps=(DowntimeStep(0, 300),),
        auto_converge=False,
        postcopy_iteration=2,
        deadline_seconds=900,
    ),
}


def automatic_policy(method: str | None) -> Policy:
    """The variant of "Automatic" the prediction chose (``method``: prediction.PRECOPY,
    AUTO_CONVERGE or POSTCOPY); without a choice, the policy as a whole (which lets QEMU
    slow the guest down, like "Balanced")."""
    return _AUTOMATIC_VARIANTS.get(method or "", POLICIES[AUTOMATIC])


DEFAULT_POLICY = AUTOMATIC

# Memory dirtied at 90% of the sending rate or more: what is left to send
# shrinks too slowly to ever fit in the allowed downtime.
OUTPACED_RATIO = 0.9


def outpaced(dirty_rate_bps: int, send_rate_bps: int) -> bool:
    return bool(send_rate_bps) and dirty_rate_bps >= OUTPACED_RATIO * send_rate_bps


# How a transfer is going, as the page and the migration's log say it. Three
# states, not two: "sends 7.9 MiB/s, dirties 7.2 MiB/s" is neither converging
# well nor "not converging" (more is sent than dirtied), it is converging slowly.
CONVERGING = "converging"
SLOWLY = "converging_slowly"
NOT_CONVERGING = "not_converging"

CONVERGENCE_WORDS = {
    CONVERGING: "converging",
    SLOWLY: "converging slowly",
    NOT_CONVERGING: "not converging",
}

# A new state is told only once it has held this long (samples come twice a
# second and the rates jitter around the thresholds)...
CONFIRM_SECONDS = 3.0
# ...and never sooner than this after the last state told: the log and the
# page must not flap between two sentences every second.
HOLD_SECONDS = 10.0


def convergence(dirty_rate_bps: int, send_rate_bps: int) -> str:
    """The state of a transfer from its rates: dirtied at least as fast as sent
    (not converging), nearly as fast (slowly), or clearly slower (converging)."""
    if not send_rate_bps or dirty_rate_bps >= send_rate_bps:
        return NOT_CONVERGING
    if outpaced(dirty_rate_bps, send_rate_bps):
        return SLOWLY
    return CONVERGING


@dataclass
class ConvergenceWatch:
    """Turns twice-a-second rate samples into a state that changes calmly.

    ``observe`` returns the state to tell (a change that held CONFIRM_SECONDS,
    at least HOLD_SECONDS after the last one told), else None. Before anything
    was told the state is taken to be converging: a transfer that goes well
    says nothing. The rates told are the averages over the confirming span,
    so the sentence matches what was seen, not one jittery sample.
    """

    confirm_seconds: float = CONFIRM_SECONDS
    hold_seconds: float = HOLD_SECONDS
    state: str = CONVERGING
    told_at: float | None = None
    # The candidate state, since when, and its samples' rates (dirty, send).
    _candidate: str | None = None
    _since: float = 0.0
    _rates: list[tuple[int, int]] = field(default_factory=list)
    _told_rates: tuple[int, int] = (0, 0)

    def observe(self, now: float, dirty_rate_bps: int, send_rate_bps: int) -> str | None:
        seen = convergence(dirty_rate_bps, send_rate_bps)
        if seen == self.state:
            self._candidate, self._rates = None, []
            return None
        if seen != self._candidate:
            self._candidate, self._since, self._rates = seen, now, []
        self._rates.append((dirty_rate_bps, send_rate_bps))
        if now - self._since < self.confirm_seconds:
            return None
        if self.told_at is not None and now - self.told_at < self.hold_seconds:
            return None
        self.state, self.told_at, self._candidate = seen, now, None
        self._told_rates = (
            round(sum(d for d, _ in self._rates) / len(self._rates)),
            round(sum(s for _, s in self._rates) / len(self._rates)),
        )
        return seen

    def rates(self) -> tuple[int, int]:
        """The average (dirty, send) rates of the samples that confirmed the state last told."""
        return self._told_rates


def convergence_sentence(state: str, dirty_rate_bps: int, send_rate_bps: int, iteration: int) -> str:
    """ "Sends 7.9 MiB/s, the guest dirties 7.2 MiB/s: converging slowly (pass 5)." """
    return (
        f"Sends {size(send_rate_bps)}/s, the guest dirties {size(dirty_rate_bps)}/s: "
        f"{CONVERGENCE_WORDS[state]} (pass {iteration})."
    )


# How many connections a migration asks for when the guest is large enough for
# them to pay off (KVMWEB_MULTIFD_MIN_MIB): QEMU's default, and a thread per
# connection on each host is what a busy host can spare.
MULTIFD_CONNECTIONS = 4


def parallel_connections_for(memory_bytes: int) -> int:
    """The parallel connections worth asking for a guest of this memory: 0 below
    KVMWEB_MULTIFD_MIN_MIB (one connection is as fast there), else MULTIFD_CONNECTIONS."""
    return MULTIFD_CONNECTIONS if memory_bytes >= settings.KVMWEB_MULTIFD_MIN_MIB * 1024 * 1024 else 0


def get_policy(name: str | None) -> "Policy | None":
    return POLICIES.get(name or DEFAULT_POLICY)


def policy_choices() -> list[tuple[str, str]]:
    """Automatic first: the default."""
    return sorted(((p.name, p.label) for p in POLICIES.values()), key=lambda c: c[0] != AUTOMATIC)
