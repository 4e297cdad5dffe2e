from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.formatting import hosts_summary
from hosts import capacity
from hosts.models import Domain, DomainStateChoices


def dashboard(request: HttpRequest) -> HttpResponse:
    """The hosts with their counts and committed memory, the split-brain
    alarms; the running migrations come over the socket (dashboard.js)."""
    hosts = capacity.with_counts()
    totals = Domain.objects.aggregate(
        total=Count("id"), running=Count("id", filter=Q(state=DomainStateChoices.RUNNING))
    )
    alarms = Domain.objects.split_brains()
    summary = hosts_summary(len(hosts), totals["total"], totals["running"])
    return render(request, "dashboard/dashboard.html", {"hosts": hosts, "summary": summary, "alarms": alarms})
