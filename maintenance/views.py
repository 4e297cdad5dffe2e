"""Pages: the plan before maintenance, an evacuation's live page, leaving maintenance,
the cluster's balance (its spread now and after the plan, and running it).

Each page renders the whole current state on the server; static/evacuation.js
only keeps the evacuation page current from /ws/evacuations/<id>/.
"""

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.roles import is_operator
from hosts.models import Host

from . import events, facts, services
from .models import ACTIVE, Evacuation, Kind

OPERATORS_ONLY = "Only operators may change maintenance. Ask an administrator to add you to the 'operators' group."


def _operator(request):
    if not is_operator(request.user):
        raise PermissionDenied(OPERATORS_ONLY)


@require_http_methods(["GET", "POST"])
def host_maintenance(request, name):
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
def host_activate(request, name):
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


def evacuation_detail(request, pk):
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
        },
    )


@require_POST
def evacuation_cancel(request, pk):
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


def _spread_rows(spread: dict[str, Any]) -> list[dict[str, Any]]:
    """Each host's row of the spread before, with its row after under ``after``."""
    after = {row["host"]: row for row in (spread.get("after") or {}).get("hosts", [])}
    return [{**row, "after": after.get(row["host"], row)} for row in (spread.get("before") or {}).get("hosts", [])]


def _balance_context(request: HttpRequest, plan: dict[str, Any]) -> dict[str, Any]:
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
