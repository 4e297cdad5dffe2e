"""Pages: the plan before maintenance, an evacuation's live page, leaving maintenance,
the cluster's balance (its spread now and after the plan, and running it).

Each page renders the whole current state on the server; static/evacuation.js
only keeps the evacuation page current from /ws/evacuations/<id>/.
"""

from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core.roles import is_operator
from hosts.models import Host, HostStatus

from . import events, facts, planner, rolling, services
from .models import ACTIVE, Evacuation, HostStep, Kind, RollingHost, RollingMaintenance

OPERATORS_ONLY = "Only operators may change maintenance. Ask an administrator to add you to the 'operators' group."


def _operator(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise PermissionDenied(OPERATORS_ONLY)


@require_http_methods(["GET", "POST"])
def host_maintenance(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the plan (nothing changes). POST: confirm, enter maintenance, evacuate."""
    host = get_object_or_404(Host, name=name)
    _operator(request)
    if request.method == "POST":
        try:
            evacuation = services.enter_maintenance(
                request.user, host, allow_partial=request.POST.get("allow_partial") == "on"
            )
        except services.Refused as e:
            messages.error(request, e.message)
        else:
            return redirect(evacuation)
    plan = services.dry_run(host)
    return render(request, "maintenance/plan.html", {"host": host, **plan})


@require_POST
def host_activate(request: HttpRequest, name: str) -> HttpResponse:
    host = get_object_or_404(Host, name=name)
    _operator(request)
    try:
        evacuation = services.activate(request.user, host, return_vms=request.POST.get("return_vms") == "on")
    except services.Refused as e:
        messages.error(request, e.message)
        return redirect(host)
    if evacuation is None:
        messages.success(request, f"{host.name} is out of maintenance.")
        return redirect(host)
    return redirect(evacuation)


def evacuation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    evacuation = get_object_or_404(Evacuation, pk=pk)
    state = events.state(evacuation)
    return render(
        request,
        "maintenance/evacuation_detail.html",
        {
            "evacuation": evacuation,
            "state": state,
            "may_cancel": is_operator(request.user) and evacuation.is_active,
            "spread_rows": _spread_rows(evacuation.spread),
            "part_of": RollingHost.objects.filter(Q(evacuation=evacuation) | Q(return_evacuation=evacuation))
            .select_related("rolling")
            .first(),
        },
    )


@require_POST
def evacuation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    evacuation = get_object_or_404(Evacuation, pk=pk)
    _operator(request)
    try:
        services.cancel(request.user, evacuation)
    except services.Refused as e:
        messages.error(request, e.message)
    return redirect(evacuation)


@require_http_methods(["GET", "POST"])
def cluster_balance(request: HttpRequest) -> HttpResponse:
    """GET: every online host's committed memory and vCPU shares now and after the
    balance plan, and its moves; nothing changes. POST (operators): run the plan
    the page showed (its digest), or say why not and show the new one."""
    if request.method == "POST":
        _operator(request)
        try:
            run = services.start_balance(request.user, digest=request.POST.get("digest", ""))
        except services.Refused as e:
            messages.error(request, e.message)
        else:
            return redirect(run)
    plan = facts.plan_balance().as_dict()
    return render(request, "maintenance/balance.html", _balance_context(request, plan))


def _spread_rows(spread: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each host's row of the spread before, with its row after under ``after``."""
    after = {row["host"]: row for row in (spread.get("after") or {}).get("hosts", [])}
    return [{**row, "after": after.get(row["host"], row)} for row in (spread.get("before") or {}).get("hosts", [])]


def _balance_context(request: HttpRequest, plan: planner.BalanceDict) -> dict[str, Any]:
    hosts = _spread_rows(plan)
    running = Evacuation.objects.filter(kind=Kind.BALANCE, status__in=ACTIVE).first()
    return {
        **plan,
        "hosts": hosts,
        "digest": services.balance_digest(plan["plan"]),
        "running": running,
        "last": None if running else Evacuation.objects.filter(kind=Kind.BALANCE).first(),
        "may_run": is_operator(request.user) and running is None and bool(plan["plan"]),
        "is_operator": is_operator(request.user),
    }


# -- rolling maintenance -----------------------------------------------------------

DEFAULT_WAIT_MINUTES = 30


@require_http_methods(["GET", "POST"])
def rolling_list(request: HttpRequest) -> HttpResponse:
    """Every rolling maintenance, newest first, and (for operators) the form that starts one.

    POST ``host`` (repeated, in order; empty choices skipped), ``wait``
    ("operator" or "timeout") and ``wait_minutes``."""
    operator = is_operator(request.user)
    if request.method == "POST":
        _operator(request)
        chosen = [v for v in request.POST.getlist("host") if v]
        wait_seconds: int | None = None
        problem = ""
        if request.POST.get("wait") == "timeout":
            try:
                wait_seconds = round(float(request.POST.get("wait_minutes", "")) * 60)
            except (ValueError, OverflowError):  # not a number, or "inf"
                wait_seconds = -1
            if not 0 <= wait_seconds <= rolling.MAX_WAIT_SECONDS:
                problem = (
                    f"Give the longest wait in minutes, from 0 to {rolling.MAX_WAIT_SECONDS // 60}, "
                    "or choose to wait until you mark each host done."
                )
        if not problem and not all(v.isdigit() for v in chosen):
            problem = "Choose the hosts from the lists."
        if problem:
            messages.error(request, problem)
        else:
            try:
                started = rolling.start(request.user, [int(v) for v in chosen], wait_seconds)
            except rolling.Refused as e:
                messages.error(request, e.message)
            else:
                return redirect(started)
    hosts = list(Host.objects.order_by("name"))
    sent = request.POST.getlist("host") if request.method == "POST" else []
    eligible = [h for h in hosts if h.status == HostStatus.ONLINE and not h.maintenance]
    return render(
        request,
        "maintenance/rolling_list.html",
        {
            "rollings": RollingMaintenance.objects.prefetch_related("entries")[:50],
            "may_start": operator,
            "eligible": eligible,
            "not_eligible": [h for h in hosts if h not in eligible],
            # One choice per place; after a refusal, what was chosen is chosen again.
            "slots": [(i, sent[i - 1] if i <= len(sent) else "") for i in range(1, len(eligible) + 1)],
            "wait_minutes": request.POST.get("wait_minutes", DEFAULT_WAIT_MINUTES),
            "wait_timeout": request.POST.get("wait") == "timeout",
        },
    )


def rolling_detail(request: HttpRequest, pk: int) -> HttpResponse:
    current = get_object_or_404(RollingMaintenance, pk=pk)
    now = timezone.now()
    entries = list(current.entries.select_related("evacuation", "return_evacuation"))
    operator = is_operator(request.user)
    return render(
        request,
        "maintenance/rolling_detail.html",
        {
            "rolling": current,
            "entries": [(e, e.wait_text(now)) for e in entries],
            "may_change": operator and current.is_active,
            "waiting": next((e for e in entries if e.state == HostStep.IN_MAINTENANCE and e.done_at is None), None),
        },
    )


@require_POST
def rolling_done(request: HttpRequest, pk: int) -> HttpResponse:
    current = get_object_or_404(RollingMaintenance, pk=pk)
    _operator(request)
    try:
        entry = rolling.mark_done(request.user, current)
    except rolling.Refused as e:
        messages.error(request, e.message)
    else:
        messages.success(request, f"{entry.host_name} is marked done: its VMs come back now.")
    return redirect(current)


@require_POST
def rolling_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    current = get_object_or_404(RollingMaintenance, pk=pk)
    _operator(request)
    try:
        rolling.cancel(request.user, current)
    except rolling.Refused as e:
        messages.error(request, e.message)
    else:
        messages.success(request, f"Cancel requested: {current} stops; every host stays as it is then.")
    return redirect(current)
