import contextlib

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from kvmweb.filters import filter_or_400
from kvmweb.formatting import hosts_summary
from kvmweb.pagination import paginate

from . import capacity, definitions, sshkeys, sync, trust
from .filters import DomainFilter
from .models import Domain, DomainStateChoices, Host, HostKeyRefused
from .roles import is_operator


def dashboard(request):
    hosts = capacity.with_counts()
    totals = Domain.objects.aggregate(
        total=Count("id"), running=Count("id", filter=Q(state=DomainStateChoices.RUNNING))
    )
    alarms = Domain.objects.split_brains()
    summary = hosts_summary(len(hosts), totals["total"], totals["running"])
    return render(request, "hosts/dashboard.html", {"hosts": hosts, "summary": summary, "alarms": alarms})


def host_detail(request, name):
    host = get_object_or_404(capacity.with_committed(Host.objects.all()), name=name)
    ssh_line = ""
    if host.uses_ssh and is_operator(request.user) and host.status != "online":
        with contextlib.suppress(sshkeys.SSHKeyError):
            ssh_line = sshkeys.authorized_keys_line()
    return render(
        request,
        "hosts/host_detail.html",
        {
            "host": host,
            "ssh_line": ssh_line,
            "pools": host.pools_with_sharing(),
            "networks": host.networks.all(),
            "domains": host.domains.order_by("name"),
            # Definitions here of VMs that are elsewhere: stale copies, or a cluster's spares.
            "elsewhere": host.definitions.exclude(domain__host=host).select_related("domain__host"),
        },
    )


@require_POST
def host_sync(request, name):
    if not is_operator(request.user):
        raise PermissionDenied(
            "Only operators may sync a host. Ask an administrator to add you to the 'operators' group."
        )
    host = get_object_or_404(Host, name=name)
    result = sync.sync_host_evenly(host)
    if result.online:
        messages.success(request, f"Inventory of {host.name} refreshed: {result}.")
    else:
        messages.error(request, f"{host.name} could not be read: {result.error}")
    return redirect(host)


@require_POST
def host_trust(request, name):
    """The host page's button: an operator confirms the SSH host key shown."""
    host = get_object_or_404(Host, name=name)
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may confirm a host key.")
    try:
        result = trust.confirm_host_key(host, request.POST.get("fingerprint", ""), request.user)
    except HostKeyRefused as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"SSH host key of {host.name} confirmed. {result}.")
    return redirect(host)


def domain_list(request):
    filters, domains, status = filter_or_400(DomainFilter, request, Domain.objects.for_listing().order_by("name", "id"))
    values = filters.form.cleaned_data if status == 200 and filters.is_bound else {}
    return render(
        request,
        "hosts/domain_list.html",
        {
            "form": filters.form,
            "q": values.get("q") or "",
            "host": values.get("host") or "",
            "state": values.get("state") or "",
            "states": DomainStateChoices.choices,
            "hosts": Host.objects.order_by("name").values_list("name", flat=True),
            **paginate(request, domains, 100),
        },
        status=status,
    )


def domain_detail(request, uuid):
    domain = get_object_or_404(Domain.objects.with_definitions(), uuid=uuid)
    return render(request, "hosts/domain_detail.html", {"domain": domain})


@require_http_methods(["GET", "POST"])
def definition_remove(request, uuid, host):
    """Remove a stale definition: a confirmation page, then a POST."""
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may remove definitions.")
    domain = get_object_or_404(Domain.objects.with_definitions(), uuid=uuid)
    host = get_object_or_404(Host, name=host)
    if request.method == "POST":
        try:
            definitions.remove_definition(request.user, domain, host)
        except definitions.DefinitionRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(request, f"{domain.name} is no longer defined on {host.name}; no disk was touched.")
        return redirect(domain)
    return render(
        request,
        "hosts/definition_remove.html",
        {"domain": domain, "host": host, "refusal": definitions.refusal(domain, host)},
    )
