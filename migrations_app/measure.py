"""The figures a prediction needs, each with its source and its age, and the
check that shows the prediction (``prediction``) and makes the choice of the
policy "Automatic".

- the guest's dirty rate: libvirt's page sampling (``Connection.dirty_rate``,
  several short periods: see its docstring and docs/prediction.md for why),
  kept a while in the cache, else what the VM's own earlier migrations
  measured pass by pass (libvirt's ``memory_dirty_rate`` x page size, kept in
  each migration's progress as ``pass_dirty_rates``);
- the sending rate between the two hosts: what earlier migrations between
  that pair achieved (``memory_bps``), and how fast their first pass went;
  the bandwidth limit when one is set and lower;
- the allowed downtime: the policy's.

The arithmetic is ``prediction.py``'s.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hosts.libvirt import HostError

from . import prediction as pr
from .models import AuditEntry, Migration, Mode, Status
from .policies import AUTOMATIC, automatic_policy, get_policy

if TYPE_CHECKING:
    from .checks import CheckInput

MiB = 1024 * 1024
# Before anything was measured between two hosts: a gigabit link, as the
# evacuation planner assumes too (planner.DEFAULT_SPEED_BPS).
ASSUMED_BPS = 100 * MiB
# The earlier migrations a figure is taken from (the newest first).
HISTORY = 5
# A page-sampling measurement is used for this long (cache), then measured again.
SAMPLED_FOR_SECONDS = 600
SAMPLING_SOURCE = "libvirt page sampling"
# A VM's earlier migration measured within this is used without sampling again in the checks.
HISTORY_TRUSTED = timedelta(days=1)


def _sample_key(uuid: object) -> str:
    return f"kvmweb:dirty-rate:{uuid}"


def sampled_rate(uuid: object) -> pr.Figure | None:
    """The newest page-sampling measurement of this VM still fresh enough, if any."""
    kept = cache.get(_sample_key(uuid))
    if not kept:
        return None
    at = parse_datetime(kept["measured_at"])
    return pr.Figure(float(kept["value"]), kept["source"], at)


def sample_now(conn: Any, uuid: object, seconds: int = 2, repeats: int = 3) -> pr.Figure:
    """Measure the dirty rate with libvirt's page sampling now (a few seconds), and keep it a while."""
    figures = conn.dirty_rate(uuid, seconds=seconds, repeats=repeats)
    value = float(statistics.mean(figures))
    now = timezone.now()
    figure = pr.Figure(value, f"{SAMPLING_SOURCE} ({repeats} x {seconds} s)", now)
    cache.set(
        _sample_key(uuid),
        {"value": value, "source": figure.source, "measured_at": now.isoformat(), "each": figures},
        SAMPLED_FOR_SECONDS,
    )
    return figure


def remember_failure(uuid: object, message: str) -> None:
    """Why the newest on-demand measurement failed, for GET .../measure/ to say."""
    cache.set(_sample_key(uuid) + ":failed", {"error": message, "at": timezone.now().isoformat()}, SAMPLED_FOR_SECONDS)


def known(uuid: object, source: Any = None, target: Any = None) -> dict[str, Any]:
    """What is known of this VM now, for the API and the VM's page: the
    sampled rate, the rate its earlier migrations measured, each with source and age."""
    now = timezone.now()
    out: dict[str, Any] = {}
    sampled = sampled_rate(uuid)
    if sampled is not None:
        out["sampled"] = sampled.as_dict(now)
    failed = cache.get(_sample_key(uuid) + ":failed")
    if failed and (sampled is None or failed["at"] > out["sampled"].get("measured_at", "")):
        out["failed"] = failed
    history = history_rate(uuid)
    if history is not None:
        out["history"] = history.as_dict(now)
    return out


def history_rate(uuid: object) -> pr.Figure | None:
    """The dirty rate the newest earlier live migration of this VM measured in
    its passes after the first (their median; the first pass's figure counts
    the pages dirtied while all of memory was read, not a rate the next passes
    face)."""
    for m in _earlier(domain_uuid=uuid):
        rates = [bps for it, bps in (m.progress or {}).get("pass_dirty_rates") or [] if it >= 2]
        if not rates and (m.stats or {}).get("dirty_rate_bps"):
            rates = [m.stats["dirty_rate_bps"]]
        if rates:
            return pr.Figure(float(statistics.median(rates)), f"migration #{m.pk} (pass by pass)", m.finished_at)
    return None


def _earlier(**filters: Any) -> list[Migration]:
    return list(
        Migration.objects.filter(mode=Mode.LIVE, status__in=[Status.SUCCEEDED, Status.FAILED], **filters)
        .exclude(stats={})
        .order_by("-finished_at")[:HISTORY]
    )


def pair_throughput(source: Any, target: Any, bandwidth_mib: int | None) -> tuple[pr.Figure, pr.Figure]:
    """(sending rate, rate without a limit) between ``source`` and ``target``.

    The rate without a limit is the median ``memory_bps`` of the newest
    earlier migrations between the two (either way) made without one; QEMU
    sends the stop-and-copy at it whatever the limit. The sending rate is the
    bandwidth limit where one is set and lower."""
    speeds: list[float] = []
    newest: Migration | None = None
    for m in _earlier(source__in=[source, target], target__in=[source, target]):
        speed = float((m.stats or {}).get("speed_bps") or 0)
        if m.source_id == m.target_id or not speed or m.bandwidth_mib:
            continue  # a limited one says nothing of the link
        speeds.append(speed)
        newest = newest or m
    if speeds and newest is not None:
        free = pr.Figure(
            statistics.median(speeds), f"{len(speeds)} earlier migration(s) between these hosts", newest.finished_at
        )
    else:
        free = pr.Figure(float(ASSUMED_BPS), "assumed (nothing measured between these hosts yet)")
    if bandwidth_mib and bandwidth_mib * MiB < free.value:
        return pr.Figure(float(bandwidth_mib * MiB), f"the bandwidth limit of {bandwidth_mib} MiB/s"), free
    return free, free


def wire_share(uuid: object) -> pr.Figure | None:
    """The share of this VM's memory that is not zero pages, as its newest
    earlier migration found it (engine/live.Governor.learn); for a VM never
    moved, the median of the newest migrations of other VMs (a guess, said so)."""
    for m in _earlier(domain_uuid=uuid):
        # Its final statistics' count (progress.job_record), else the last sample's.
        share = (m.stats or {}).get("wire_share", (m.progress or {}).get("wire_share"))
        if share is not None:
            return pr.Figure(float(share), f"migration #{m.pk}", m.finished_at)
    others = [
        (share, at)
        for share, at in Migration.objects.filter(mode=Mode.LIVE, status=Status.SUCCEEDED)
        .exclude(stats={})
        .order_by("-finished_at")
        .values_list("stats__wire_share", "finished_at")[:20]
        if share is not None
    ]
    if others:
        return pr.Figure(
            float(statistics.median(s for s, _ in others)), f"{len(others)} other VMs' migrations", others[0][1]
        )
    return None


@dataclass
class Estimate:
    dirty: pr.Figure
    throughput: pr.Figure
    unlimited: pr.Figure
    share: pr.Figure | None
    precopy: pr.Prediction
    auto_converge: pr.Prediction
    postcopy: pr.Prediction | None
    chosen: pr.Prediction | None  # what the request's policy would do
    choice: pr.Choice | None  # the policy "Automatic" only

    def inputs(self, now: datetime) -> dict[str, Any]:
        return {
            "dirty_rate_bps": self.dirty.as_dict(now),
            "throughput_bps": self.throughput.as_dict(now),
            "unlimited_bps": self.unlimited.as_dict(now),
            **({"wire_share": self.share.as_dict(now)} if self.share else {}),
        }


def postcopy_refused(source_name: str, target_name: str) -> bool:
    """Whether a migration between these hosts found post-copy refused (engine/live.py audits it)."""
    since = timezone.now() - timedelta(days=30)
    return AuditEntry.objects.filter(
        action="policy",
        source_name=source_name,
        target_name=target_name,
        data__decision="postcopy_unsupported",
        at__gte=since,
    ).exists()


# Post-copy only for guests that run on KVM. In the lab (QEMU 7.2, software
# emulation: <domain type='qemu'>) post-copy moved the guest and libvirt said
# it succeeded, but in 4 runs of 9 the guest's kernel then panicked on the
# target, jumping into a page that held another page's data (docs/prediction.md).
POSTCOPY_VIRT_TYPES = frozenset({"kvm"})


def postcopy_unavailable(source_name: str, target_name: str, virt_type: str) -> str:
    """Why post-copy may not move this guest between these hosts; "" if it may."""
    if virt_type not in POSTCOPY_VIRT_TYPES:
        return (
            f"post-copy is not used for a software-emulated guest (type '{virt_type}'): it corrupted such guests' "
            "memory in kvmweb's tests"
        )
    if postcopy_refused(source_name, target_name):
        return "post-copy is not available between these hosts"
    return ""


def estimate(
    memory_bytes: int,
    dirty: pr.Figure,
    throughput: pr.Figure,
    unlimited: pr.Figure,
    share: pr.Figure | None,
    policy_name: str,
    no_postcopy: str,
) -> Estimate:
    """Every prediction for these figures, and what the request's policy would do."""
    auto = policy_name == AUTOMATIC
    policy = automatic_policy(pr.PRECOPY) if auto else get_policy(policy_name)
    assert policy is not None
    wire = share.value if share else 1.0
    common: dict[str, Any] = {
        "wire_share": wire,
        "final_bps": unlimited.value,
        "deadline_seconds": policy.deadline_seconds,
    }
    plain = pr.predict(memory_bytes, dirty.value, throughput.value, policy.downtime_at, **common)
    conv_policy = automatic_policy(pr.AUTO_CONVERGE) if auto else policy
    throttled = pr.predict(
        memory_bytes, dirty.value, throughput.value, conv_policy.downtime_at, auto_converge=True, **common
    )
    post = (
        pr.predict_postcopy(memory_bytes, dirty.value, throughput.value, wire_share=wire) if not no_postcopy else None
    )
    choice = pr.choose(plain, throttled, post, no_postcopy) if auto else None
    if auto:
        chosen = choice.prediction if choice else None
    elif policy.postcopy_iteration is not None and not plain.converges and not no_postcopy:
        chosen = pr.predict_postcopy(
            memory_bytes,
            dirty.value,
            throughput.value,
            switch_pass=policy.postcopy_iteration,
            wire_share=wire,
        )
    elif policy.auto_converge and not plain.converges:
        chosen = throttled
    else:
        chosen = plain
    return Estimate(dirty, throughput, unlimited, share, plain, throttled, post, chosen, choice)


def gather(v: CheckInput, memory_bytes: int, source_conn: Any, sample: bool, virt_type: str = "kvm") -> Estimate:
    """The estimate for a request's values (checks._request_values).
    ``sample``: measure the dirty rate with libvirt now when nothing fresher is known."""
    uuid = v.uuid
    dirty = sampled_rate(uuid)
    history = history_rate(uuid)
    recent = (
        history is not None
        and history.measured_at is not None
        and history.measured_at > timezone.now() - HISTORY_TRUSTED
    )
    # Sampling costs the checks some 4 s: only where no recent migration measured the VM.
    if dirty is None and sample and source_conn is not None and not recent:
        try:
            dirty = sample_now(source_conn, uuid, repeats=2)
        except HostError:
            dirty = None
    if history is not None and (dirty is None or (recent and history.value > dirty.value)):
        # Both read low in their own way (docs/prediction.md): sampling by
        # chance, a migration's passes when they were long (a page rewritten
        # twice in a pass counts once). The higher of the two is predicted with.
        dirty = history
    if dirty is None:
        dirty = pr.Figure(0.0, "nothing measured yet (assumed idle)")
    throughput, unlimited = pair_throughput(v.source, v.target, v.bandwidth_mib)
    no_postcopy = postcopy_unavailable(v.source.name, v.target.name, virt_type)
    return estimate(memory_bytes, dirty, throughput, unlimited, wire_share(uuid), v.policy, no_postcopy)


def age_words(fig: pr.Figure, now: datetime) -> str:
    age = fig.age_seconds(now)
    if age is None:
        return ""
    if age < 120:
        return f", {age:.0f} s old"
    if age < 7200:
        return f", {age / 60:.0f} min old"
    return f", {age / 3600:.0f} h old"
