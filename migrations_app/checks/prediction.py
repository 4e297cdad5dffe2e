"""What the migration is expected to take (migrations_app/prediction.py, from the
figures migrations_app/measure.py gathers), and for the policy "Automatic" the
method it chose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .. import measure
from .. import prediction as pr
from ..models import Mode
from ..policies import parallel_connections_for
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails

MiB = 1024 * 1024


def check_prediction(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    """The pre-flight entry ``prediction``: the expected duration, passes and
    downtime in one sentence, with the figures it rests on; for the policy
    "Automatic", the method chosen and why (or the refusal, advising a cold move)."""
    if v.mode != Mode.LIVE:
        return
    record = v.record
    # The worker's checks measure (a few seconds); a dry run from the form uses what is known.
    est = measure.gather(v, dom.info.memory, source, sample=record is not None, virt_type=dom.virt_type)
    now = timezone.now()
    figures = "; ".join(
        f"{label} {fig.value / MiB:.1f} MiB/s from {fig.source}" + measure.age_words(fig, now)
        for label, fig in (("dirty rate", est.dirty), ("sending rate", est.throughput))
    )
    detail = f"From {figures}."
    inputs = est.inputs(now)
    saved: dict[str, Any] = {"inputs": inputs, "policy": v.policy}
    if est.choice is not None:
        choice = est.choice
        saved.update(method=choice.method, reason=choice.reason)
        if choice.method == pr.COLD:
            result, message = FAIL, f"Automatic refuses to move it live: {choice.reason}."
        else:
            result, message = PASS, f"Automatic chose {pr.METHOD_WORDS[choice.method]}: {choice.reason}."
        # Parallel connections where the guest is large enough to gain from them
        # (policies.parallel_connections_for), unless the request chose a number.
        connections = parallel_connections_for(dom.info.memory)
        saved["parallel_connections"] = connections
        if record is not None and connections and not record.parallel_connections:
            record.use_parallel_connections(connections)
    else:
        chosen = est.chosen or est.precopy
        result = PASS if chosen.converges else WARN
        message = pr.sentence(chosen, v.bandwidth_mib)
    chosen_p = est.chosen
    if chosen_p is not None:
        saved.update(chosen_p.as_dict())
        saved["inputs"] = inputs  # the figures it rests on, over any the prediction carries
    checks.add("prediction", result, message, detail)
    if record is not None:
        record.record_prediction(saved)
