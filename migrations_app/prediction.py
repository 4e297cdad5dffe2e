"""How a live migration will go, before it starts: pure arithmetic, no database, no libvirt.

Pre-copy sends the whole memory once (the first pass), then, pass after
pass, what the guest dirtied during the pass before; it stops the guest and
sends the rest once that rest fits in the allowed downtime at the sending
rate (QEMU's own test: remaining bytes <= bandwidth x downtime). So from the
memory size M, the dirty rate r, the sending rate b and the allowed downtime
d: the first pass takes M / b1, each next pass sends r x (the time of the
pass before), and the transfer converges when r < b, in about
log(b x d / M) / log(r / b) passes. A guest cannot dirty more than its whole
memory in a pass (the dirtied part is capped at M).

``measure.py`` gathers the figures (each with where it came from and how
old it is); the pre-flight check ``prediction``, the policy "Automatic", the
governor (after the first pass) and the evacuation planner all call
``predict`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

MiB = 1024 * 1024

# Connecting, preparing the target, starting the job: seconds of libvirt's job
# time before the first byte of memory moves (the lab: an idle 256 MiB guest of
# which a third is not zero crossed in 2.2 s at 64 MiB/s, 1.7 s of it sending).
SETUP_SECONDS = 0.5
# What a switch-over costs besides sending the last bytes: stopping the guest,
# the device state, starting it on the target (the lab's guests: 24-44 ms in
# all, the last memory included: QEMU sends it without the bandwidth limit).
SWITCHOVER_MS = 30
# Pre-copy that needs more passes than this is not converging in any useful
# sense (QEMU would carry on, and the policy's deadline ends it).
MAX_PASSES = 30
# Pages that hold only zeros cost a flag on the wire, not a page, and no
# bandwidth limit: QEMU only reads them (the lab: an idle 256 MiB guest
# crossed in 6.4 s at 16 MiB/s, not 16 s). What share of a VM's memory is not
# zero its earlier migrations tell (``wire_share``); unknown: all of it.
ZERO_SCAN_BPS = 1024 * MiB
# Memory dirtied at this share of the sending rate or more never shrinks
# enough (policies.OUTPACED_RATIO says the same of a running transfer).
OUTPACED_RATIO = 0.9
# Auto-converge as kvmweb asks for it (engine/live.py: initial 20 %, +10 % a
# step) and as QEMU 7.2 applies it: from the second pass that fell behind on.
THROTTLE_INITIAL = 0.20
THROTTLE_INCREMENT = 0.10
THROTTLE_MAX = 0.99

PRECOPY, AUTO_CONVERGE, POSTCOPY, COLD = "precopy", "auto_converge", "postcopy", "cold"
METHOD_WORDS = {PRECOPY: "plain pre-copy", AUTO_CONVERGE: "auto-converge", POSTCOPY: "post-copy", COLD: "a cold move"}


@dataclass(frozen=True)
class Figure:
    """One input of a prediction: its value, where it came from, and when it was measured."""

    value: float
    source: str  # "libvirt page sampling", "migration #12", "bandwidth limit", "assumed"...
    measured_at: datetime | None = None

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.measured_at is None else max(0.0, (now - self.measured_at).total_seconds())

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source}
        if self.measured_at is not None:
            out["measured_at"] = self.measured_at.isoformat()
            if now is not None:
                out["age_seconds"] = round(self.age_seconds(now) or 0.0)
        return out


@dataclass(frozen=True)
class Prediction:
    method: str  # PRECOPY, AUTO_CONVERGE, POSTCOPY
    converges: bool
    seconds: float  # from the start of the job to the guest running on the target
    passes: int
    downtime_ms: int
    memory_bytes: int
    dirty_rate_bps: float
    throughput_bps: float
    # Auto-converge: the throttle reached when it converges; else 0.
    throttle_percent: int = 0
    why: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 1)
        out["dirty_rate_bps"] = round(self.dirty_rate_bps)
        out["throughput_bps"] = round(self.throughput_bps)
        return out


DowntimeRule = Callable[[float], int]


def _downtime_rule(downtime: int | DowntimeRule) -> DowntimeRule:
    if callable(downtime):
        return downtime
    fixed = int(downtime)
    return lambda _elapsed: fixed


def predict(
    memory_bytes: int,
    dirty_rate_bps: float,
    throughput_bps: float,
    downtime_ms: int | DowntimeRule,
    *,
    first_pass_bps: float | None = None,
    auto_converge: bool = False,
    setup_seconds: float = SETUP_SECONDS,
    deadline_seconds: float | None = None,
    max_passes: int = MAX_PASSES,
    memory_total: int | None = None,
    wire_share: float = 1.0,
    final_bps: float | None = None,
) -> Prediction:
    """Pre-copy (with auto-converge if asked), pass by pass.

    ``downtime_ms`` is the allowed downtime, fixed or as a function of the
    seconds since the transfer began (a policy's ``downtime_at``).
    ``first_pass_bps``: how fast the first pass goes when that differs from
    the sending rate (without a bandwidth limit, pages that hold only zeros
    cost next to nothing on the wire); default ``throughput_bps``.
    ``memory_total``: the guest's whole memory when ``memory_bytes`` is only
    what is left of a pass under way (a refinement); the dirtied part of a
    pass is capped by it. ``wire_share``: the share of the memory that is
    not zero pages (the first pass sends only that). ``final_bps``: the
    rate of the stop-and-copy, which QEMU sends without the bandwidth limit
    (default ``throughput_bps``).

    ``passes`` counts as libvirt's ``memory_iteration`` does: one more than
    the passes over memory (QEMU counts the synchronisation before the first).
    """
    if throughput_bps <= 0:
        raise ValueError("the sending rate must be above zero")
    allowed = _downtime_rule(downtime_ms)
    memory = max(0, int(memory_bytes))
    rate = max(0.0, float(dirty_rate_bps))
    b = float(throughput_bps)
    b1 = float(first_pass_bps or throughput_bps)
    whole = max(memory, int(memory_total or 0))
    share = min(1.0, max(0.0, wire_share))
    elapsed = memory * share / b1 + memory * (1 - share) / ZERO_SCAN_BPS  # the first pass
    dirty = min(whole, rate * elapsed)
    passes = 1
    throttle = 0.0
    behind = 0
    converges = False
    while True:
        if dirty / b * 1000 <= allowed(elapsed):
            converges = True
            break
        if passes >= max_passes or (deadline_seconds is not None and elapsed > deadline_seconds):
            break
        pass_seconds = dirty / b
        guest_rate = rate * (1 - throttle)
        if auto_converge:
            # QEMU 7.2 throttles once the guest dirtied more than half of what a
            # pass sent, twice in a row, then steps the throttle up each pass after.
            if guest_rate * pass_seconds > 0.5 * dirty:
                behind += 1
                if behind >= 2:
                    throttle = THROTTLE_INITIAL if throttle == 0 else min(THROTTLE_MAX, throttle + THROTTLE_INCREMENT)
                    guest_rate = rate * (1 - throttle)
        elapsed += pass_seconds
        passes += 1
        dirty = min(whole, guest_rate * pass_seconds)
        if not auto_converge and rate >= OUTPACED_RATIO * b and passes >= 3:
            # What is left no longer shrinks: passes would go on until the deadline.
            break
    final_ms = dirty / float(final_bps or b) * 1000
    why = ""
    if not converges:
        why = (
            f"the guest dirties {rate / MiB:.1f} MiB/s while {b / MiB:.1f} MiB/s can be sent"
            if rate >= OUTPACED_RATIO * b
            else f"it needs more than {passes} passes" + (f" or {deadline_seconds:.0f} s" if deadline_seconds else "")
        )
    return Prediction(
        method=AUTO_CONVERGE if auto_converge else PRECOPY,
        converges=converges,
        seconds=setup_seconds + elapsed + (final_ms / 1000 if converges else 0),
        passes=passes + (2 if converges else 1),
        downtime_ms=round(final_ms + SWITCHOVER_MS),
        memory_bytes=memory,
        dirty_rate_bps=rate,
        throughput_bps=b,
        throttle_percent=round(throttle * 100),
        why=why,
    )


def predict_postcopy(
    memory_bytes: int,
    dirty_rate_bps: float,
    throughput_bps: float,
    *,
    switch_pass: int = 2,
    first_pass_bps: float | None = None,
    setup_seconds: float = SETUP_SECONDS,
    wire_share: float = 1.0,
) -> Prediction:
    """Pre-copy until ``switch_pass`` starts, then post-copy: the guest runs on
    the target from the switch and fetches the rest, which always ends.
    The pause is the switch itself (the device state), not the memory."""
    b = float(throughput_bps)
    b1 = float(first_pass_bps or throughput_bps)
    memory = max(0, int(memory_bytes))
    rate = max(0.0, float(dirty_rate_bps))
    share = min(1.0, max(0.0, wire_share))
    elapsed = memory * share / b1 + memory * (1 - share) / ZERO_SCAN_BPS
    dirty = min(memory, rate * elapsed)
    for _ in range(2, switch_pass):
        pass_seconds = dirty / b
        elapsed += pass_seconds
        dirty = min(memory, rate * pass_seconds)
    # After the switch the guest dirties nothing that must be sent again.
    elapsed += dirty / b
    return Prediction(
        method=POSTCOPY,
        converges=True,
        seconds=setup_seconds + elapsed,
        passes=switch_pass + 1,
        downtime_ms=SWITCHOVER_MS,
        memory_bytes=memory,
        dirty_rate_bps=rate,
        throughput_bps=b,
    )


@dataclass(frozen=True)
class Choice:
    """What the policy "Automatic" does, and why in one sentence."""

    method: str  # PRECOPY, AUTO_CONVERGE, POSTCOPY or COLD (refused)
    prediction: Prediction | None
    reason: str


# Auto-converge is chosen only while the guest keeps most of its speed: a
# guest slowed by more than this is better moved by post-copy.
AUTO_CONVERGE_MAX_THROTTLE = 50


def choose(
    precopy: Prediction,
    auto_converge: Prediction,
    postcopy: Prediction | None,
    no_postcopy: str = "post-copy is not available between these hosts",
) -> Choice:
    """Plain pre-copy where it converges; else auto-converge where it converges
    without slowing the guest by more than half; else post-copy where it is
    allowed (``postcopy`` None: it is not, ``no_postcopy`` says why); else
    refuse: move it cold."""
    if precopy.converges:
        return Choice(PRECOPY, precopy, f"it converges as it is ({describe(precopy)})")
    if auto_converge.converges and auto_converge.throttle_percent <= AUTO_CONVERGE_MAX_THROTTLE:
        return Choice(
            AUTO_CONVERGE,
            auto_converge,
            f"plain pre-copy would not converge ({precopy.why}); slowing the guest's CPUs by up to "
            f"{auto_converge.throttle_percent}% lets it ({describe(auto_converge)})",
        )
    if postcopy is not None:
        return Choice(
            POSTCOPY,
            postcopy,
            f"pre-copy would not converge ({precopy.why}); post-copy moves the guest after "
            f"{postcopy.passes - 2} pass and fetches the rest ({describe(postcopy)})",
        )
    return Choice(
        COLD,
        None,
        f"pre-copy would not converge ({precopy.why}) and {no_postcopy}: move it cold, or raise the bandwidth",
    )


def describe(p: Prediction) -> str:
    """ "about 14 s, 3 passes, ~80 ms paused" """
    passes = f"{p.passes} pass" + ("" if p.passes == 1 else "es")
    return f"about {_seconds(p.seconds)}, {passes}, ~{p.downtime_ms} ms paused"


def sentence(p: Prediction, bandwidth_mib: int | None = None) -> str:
    """The prediction in one sentence, for the form and the checks."""
    if p.converges:
        how = {AUTO_CONVERGE: " with auto-converge", POSTCOPY: " with post-copy"}.get(p.method, "")
        return f"Expected{how}: {describe(p)}."
    at = f"{bandwidth_mib} MiB/s" if bandwidth_mib else f"{p.throughput_bps / MiB:.0f} MiB/s"
    return (
        f"Will not converge at {at}: the guest dirties {p.dirty_rate_bps / MiB:.0f} MiB/s — choose Make it "
        "converge, raise the bandwidth, or move it cold."
        if p.dirty_rate_bps >= OUTPACED_RATIO * p.throughput_bps
        else f"Will not converge at {at} ({p.why}) — choose Make it converge, raise the bandwidth, or move it cold."
    )


def _seconds(s: float) -> str:
    if s < 90:
        return f"{max(1, math.ceil(s))} s"
    return f"{s / 60:.0f} min"


def error_ratio(predicted: float | None, actual: float | None) -> float | None:
    """(predicted - actual) / actual: +0.25 is 25 % too long, -0.25 too short."""
    if predicted is None or not actual:
        return None
    return (predicted - actual) / actual
