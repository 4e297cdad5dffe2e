import contextlib
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.filters import filter_or_400
from core.pagination import paginate
from core.roles import is_operator

from . import capacity, definitions, registration, sshkeys, sync, trust, volumes
from .filters import DomainFilter
from .models import Domain, DomainStateChoices, Host, HostKeyRefused
from .serializers import HostSerializer
from .signals import domain_page


@require_http_methods(["GET", "POST"])
def host_list(request: HttpRequest) -> HttpResponse:
    """Every host, and for operators the "Add host" form: the API's serializer
    validates it and registration.register saves, audits and reads it, as for
    POST /api/hosts/."""
    operator = is_operator(request.user)
    serializer = None
    if request.method == "POST":
        if not operator:
            raise PermissionDenied(
                "Only operators may register hosts. Ask an administrator to add you to the 'operators' group."
            )
        data = {key: request.POST.get(key, "").strip() for key in ("name", "uri", "fingerprint")}
        serializer = HostSerializer(data=data, context={"request": request})
        if serializer.is_valid():
            host = registration.register(serializer, request.user)
            if host.host_key_state in ("unconfirmed", "changed"):
                messages.warning(
                    request,
                    f"{host.name} is registered. Compare the SSH host key it offers with the host's own "
                    "and confirm it: kvmweb does not connect before.",
                )
            elif host.status == "online":
                messages.success(request, f"{host.name} is registered and its inventory read.")
            else:
                messages.warning(request, f"{host.name} is registered but could not be read: {host.status_reason}")
            return redirect(host)
    public_key = ssh_line = ""
    if operator:
        with contextlib.suppress(sshkeys.SSHKeyError):
            public_key, ssh_line = sshkeys.public_key(), sshkeys.authorized_keys_line()
    return render(
        request,
        "hosts/host_list.html",
        {
            "hosts": capacity.with_counts(),
            "errors": serializer.errors if serializer is not None else {},
            "values": serializer.initial_data if serializer is not None else {},
            "open_form": serializer is not None or "add" in request.GET or not Host.objects.exists(),
            "public_key": public_key,
            "ssh_line": ssh_line,
        },
        status=400 if serializer is not None else 200,
    )


def host_detail(request: HttpRequest, name: str) -> HttpResponse:
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
            "leftovers": volumes.leftovers(host),
        },
    )


@require_http_methods(["GET", "POST"])
def volume_remove(request: HttpRequest, name: str) -> HttpResponse:
    """Remove a leftover volume: a confirmation page, then a POST."""
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may remove volumes.")
    host = get_object_or_404(Host, name=name)
    params = request.POST if request.method == "POST" else request.GET
    pool, volume = params.get("pool", ""), params.get("name", "")
    if request.method == "POST":
        try:
            volumes.remove_volume(request.user, host, pool, volume)
        except volumes.VolumeRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(request, f"Removed the leftover {volume} from pool {pool} on {host.name}.")
        return redirect(host)
    leftover = next((x for x in volumes.leftovers(host) if x.pool == pool and x.name == volume), None)
    return render(
        request, "hosts/volume_remove.html", {"host": host, "pool": pool, "name": volume, "leftover": leftover}
    )


@require_POST
def host_sync(request: HttpRequest, name: str) -> HttpResponse:
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
def host_trust(request: HttpRequest, name: str) -> HttpResponse:
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


def domain_list(request: HttpRequest) -> HttpResponse:
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


def domain_detail(request: HttpRequest, uuid: UUID) -> HttpResponse:
    domain = get_object_or_404(Domain.objects.with_definitions(), uuid=uuid)
    context: dict[str, Any] = {"domain": domain}
    # What the apps above know of this VM (its measured dirty rate: migrations_app.measure).
    for _receiver, extra in domain_page.send_robust(sender=Domain, domain=domain):
        if isinstance(extra, dict):
            context.update(extra)
    return render(request, "hosts/domain_detail.html", context)


@require_http_methods(["GET", "POST"])
def definition_remove(request: HttpRequest, uuid: UUID, host: str) -> HttpResponse:
    """Remove a stale definition: a confirmation page, then a POST."""
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may remove definitions.")
    domain = get_object_or_404(Domain.objects.with_definitions(), uuid=uuid)
    row = get_object_or_404(Host, name=host)
    if request.method == "POST":
        try:
            definitions.remove_definition(request.user, domain, row)
        except definitions.DefinitionRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(request, f"{domain.name} is no longer defined on {row.name}; no disk was touched.")
        return redirect(domain)
    return render(
        request,
        "hosts/definition_remove.html",
        {"domain": domain, "host": row, "refusal": definitions.refusal(domain, row)},
    )
