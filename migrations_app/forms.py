"""The migration form (the plain-HTML path to services.request_migration) and
the audit log's filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hosts import capacity
from hosts.models import Domain, Host, PoolSharing, StoragePool

from .models import Migration, Mode, StorageMode
from .policies import POLICIES, policy_choices
from .request import (
    BANDWIDTH_MIB,
    DEFAULTS,
    PARALLEL_CONNECTIONS,
    RULE_OVERRIDE_MAX_LENGTH,
    SHUTDOWN_TIMEOUT,
    MigrationRequest,
    parallel_connections_error,
)

if TYPE_CHECKING:
    from .services import MigrationRefused

FORCE_OFF_CHOICES = [
    ("", "Give up and leave it running on the source"),
    ("1", "Power it off (like pulling the plug: unsaved data in the guest is lost)"),
]


class TargetSelect(forms.Select):
    """Target hosts; those that cannot take a VM now stay listed but disabled,
    the reason in their label, so nobody picks one only to be refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unavailable: dict[str, str] = {}  # host pk -> why it cannot take a VM

    def create_option(
        self,
        name: str,
        value: Any,
        label: Any,
        selected: Any,
        index: int,
        subindex: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        reason = self.unavailable.get(str(value))
        if reason:
            option["label"] = f"{label}: {reason}"
            option["attrs"]["disabled"] = True
        option["attrs"]["data-name"] = getattr(getattr(value, "instance", None), "name", "")
        return option


# The choice fields are generic only to mypy (django-stubs), not at run time: hence type-arg ignored.
class HostChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    widget = TargetSelect

    def label_from_instance(self, host: Host) -> str:
        label = host.name
        if host.status != "online":
            label += f" ({host.get_status_display().lower()})"
        return label


class DomainSelect(forms.Select):
    """VMs, each option saying its host (data-host: the page disables that host
    as a target) and whether its disks are local (data-local: copy them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local: set[str] = set()  # pks of VMs with a disk on storage only their host has

    def create_option(
        self,
        name: str,
        value: Any,
        label: Any,
        selected: Any,
        index: int,
        subindex: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        domain = getattr(value, "instance", None)
        if domain is not None:
            option["attrs"]["data-host"] = domain.host.name
            option["attrs"]["data-local"] = "1" if str(value) in self.local else ""
        return option


class DomainChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    widget = DomainSelect

    def label_from_instance(self, domain: Domain) -> str:
        return f"{domain.name} (on {domain.host.name}, {domain.get_state_display().lower()})"


def unavailable_reason(host: Host) -> str:
    """Why ``host`` cannot take a VM now ("" if it can): in maintenance, or not answering.
    The checks and services.validate say so too; the form does not offer it."""
    if host.maintenance:
        return "in maintenance"
    if host.status in ("offline", "error"):
        return "not answering"
    return ""


def local_disk_domains(domains: Sequence[Domain]) -> set[str]:
    """The pks (as text) of ``domains`` with a disk in a pool only its host has (a
    pool neither network storage, nor marked shared, nor proved shared by the
    storage check): a migration must copy their disks, shared storage would be refused."""
    host_ids = {d.host_id for d in domains}
    shared = {
        (host_id, name): pool_shared or marked
        for host_id, name, pool_shared, marked in StoragePool.objects.filter(host__in=host_ids).values_list(
            "host_id", "name", "shared", "marked_shared"
        )
    }
    for host_id, name in PoolSharing.objects.filter(host__in=host_ids, shared=True).values_list("host_id", "pool"):
        shared[(host_id, name)] = True
    local: set[str] = set()
    for domain in domains:
        for disk in domain.disks or []:
            if disk.get("device") != "disk" or not disk.get("path"):
                continue
            if shared.get((domain.host_id, disk.get("pool"))) is False:
                local.add(str(domain.pk))
                break
    return local


class PoolSelect(forms.Select):
    """Pools grouped by host, each host's default pool marked (data-default)
    for the page to pre-select when that host is chosen."""

    defaults: dict[str, str] = {}

    def optgroups(
        self, name: str, value: list[str], attrs: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        groups = super().optgroups(name, value, attrs)
        for host, options, _index in groups:
            for option in options:
                if host and self.defaults.get(host) == option["value"]:
                    option["attrs"]["data-default"] = True
        return groups


class MigrationForm(forms.Form):
    """A request.MigrationRequest as a page asks for it; its limits and
    defaults are that module's. A field left empty takes its default."""

    domain = DomainChoiceField(
        queryset=Domain.objects.select_related("host").order_by("name", "id"), label="Virtual machine"
    )
    target_host = HostChoiceField(
        queryset=Host.objects.order_by("name"), label="Target host", empty_label="Choose a host…"
    )
    mode = forms.ChoiceField(choices=Mode.choices, initial=DEFAULTS["mode"], widget=forms.RadioSelect)
    storage = forms.ChoiceField(
        choices=StorageMode.choices, initial=DEFAULTS["storage"], required=False, widget=forms.RadioSelect
    )
    target_pool = forms.ChoiceField(required=False, label="Target pool (to copy the disks into)", widget=PoolSelect)
    policy = forms.ChoiceField(
        choices=policy_choices,
        initial=DEFAULTS["policy"],
        required=False,
        widget=forms.RadioSelect,
        label="If memory changes faster than it can be sent",
    )
    bandwidth_mib = forms.IntegerField(
        required=False,
        min_value=BANDWIDTH_MIB.min,
        max_value=BANDWIDTH_MIB.max,
        label="Bandwidth limit (MiB/s)",
        help_text="Empty for no limit.",
        widget=forms.NumberInput(attrs={"placeholder": "no limit"}),
    )
    parallel_connections = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=PARALLEL_CONNECTIONS.max,
        initial=DEFAULTS["parallel_connections"],
        label="Parallel connections",
        help_text=f"Live: {PARALLEL_CONNECTIONS.min} to {PARALLEL_CONNECTIONS.max} connections carry the memory "
        "side by side, for large guests on fast links; 0 for one.",
    )
    shutdown_timeout = forms.IntegerField(
        min_value=SHUTDOWN_TIMEOUT.min,
        max_value=SHUTDOWN_TIMEOUT.max,
        initial=DEFAULTS["shutdown_timeout"],
        required=False,
        label="Wait for a clean shutdown (seconds)",
    )
    force_off = forms.TypedChoiceField(
        choices=FORCE_OFF_CHOICES,
        coerce=bool,
        empty_value=False,  # type: ignore[arg-type]  # the stubs want text; the empty choice is False
        initial="",
        required=False,
        widget=forms.RadioSelect,
        label="If it does not shut down in time",
    )
    keep_source_volumes = forms.BooleanField(required=False, label="Keep the copy on the source")
    eject_media = forms.BooleanField(
        required=False, label="Eject CD-ROMs and floppies whose image the target cannot see"
    )
    rule_override = forms.CharField(
        required=False,
        max_length=RULE_OVERRIDE_MAX_LENGTH,
        label="Move it against a placement rule, because",
        help_text="Leave empty unless you mean it: a move that breaks a rule then only warns, and the reason is "
        "audited.",
    )

    def __init__(self, *args: Any, domain: Domain | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # This form's own copies of the fields declared above.
        hosts = cast(HostChoiceField, self.fields["target_host"])
        domains = cast(DomainChoiceField, self.fields["domain"])
        if domain is not None:
            domains.queryset = Domain.objects.select_related("host").filter(pk=domain.pk)
            domains.initial = domain.pk
            domains.widget = forms.HiddenInput()  # type: ignore[assignment]  # the stubs keep the class's type
            if "storage" not in self.initial and local_disk_domains([domain]):
                self.initial["storage"] = StorageMode.COPY
        else:
            cast(DomainSelect, domains.widget).local = local_disk_domains(list(domains.queryset or []))
        cast(TargetSelect, hosts.widget).unavailable = {
            str(host.pk): reason for host in hosts.queryset or [] if (reason := unavailable_reason(host))
        }
        if domain is not None:
            # Listed, not left out: a request for it still gets services.validate's words.
            cast(TargetSelect, hosts.widget).unavailable[str(domain.host_id)] = f"{domain.name} runs here now"
        # Pools grouped by host; the page shows only the chosen target's
        # (services.validate checks the pool really is on the target).
        groups: dict[str, list[tuple[str, str]]] = {}
        free: dict[str, dict[str, int]] = {}
        names: dict[str, str] = {}
        for pool in StoragePool.objects.select_related("host").filter(active=True).order_by("host__name", "name"):
            groups.setdefault(pool.host.name, []).append((pool.name, f"{pool.name} ({pool.type})"))
            free.setdefault(pool.host.name, {})[pool.name] = pool.available
            names[str(pool.host.pk)] = pool.host.name
        pools = cast(forms.ChoiceField, self.fields["target_pool"])
        pools.choices = [("", "The default: the source's pool name, else the most room")] + list(groups.items())
        if domain is not None:
            # Each host's default pool (services.default_target_pool's choice,
            # from the same figures), pre-selected when that host is chosen.
            need, prefer = capacity.disks_to_copy(domain)
            defaults = {
                host: capacity.choose_copy_pool(pools, need, prefer)
                for host, pools in free.items()
                if host != domain.host.name
            }
            widget = cast(PoolSelect, pools.widget)
            widget.defaults = {host: pool for host, pool in defaults.items() if pool}
            target = names.get(str(self.initial.get("target_host", "")))
            if target in widget.defaults:
                self.initial.setdefault("target_pool", widget.defaults[target])
        cast(forms.RadioSelect, self.fields["policy"].widget).choices = [
            (p.name, policy_label(p.label, p.description)) for p in POLICIES.values()
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        for name, default in DEFAULTS.items():
            if name in data and data[name] in (None, ""):
                data[name] = default
        if data.get("storage") != StorageMode.COPY:
            data["target_pool"] = ""
        # A pool the target does not have: services.validate refuses it (every
        # path of the form goes through it), naming the pools it has.
        if data.get("mode") != Mode.COLD:
            data["force_off"] = False
        error = parallel_connections_error(data.get("parallel_connections"))
        if error:
            self.add_error("parallel_connections", error)
        return data

    def to_request(self) -> MigrationRequest:
        return MigrationRequest.from_fields(self.cleaned_data)

    # The migration in the way of a refused request ("already being migrated"), linked beside the error.
    running: Migration | None = None

    def add_refusal(self, refused: MigrationRefused) -> None:
        """Show a services.MigrationRefused beside the field it is about."""
        field = refused.field if refused.field in self.fields else None
        self.add_error(field, refused.message)
        self.running = refused.running

    def summary(self, req: MigrationRequest) -> str:
        """What will happen, in one or two sentences, for the confirmation of
        ``req`` (this form's request, its target pool filled in)."""
        data = self.cleaned_data
        domain, target = data["domain"], data["target_host"]
        if data["mode"] == Mode.COLD:
            text = (
                f"{domain.name} will be shut down on {domain.host.name}, its disks copied "
                f"and its definition moved to {target.name}"
            )
            if domain.is_running:
                text += ", then started there"
            text += ". It is unavailable until then."
            if data["force_off"]:
                text += f" If it has not shut down after {data['shutdown_timeout']} s it will be powered off."
        else:
            text = (
                f"{domain.name} will move from {domain.host.name} to {target.name} while it "
                "keeps running; it pauses only for the final switch-over."
            )
        if req.storage == StorageMode.COPY:
            text += f" Its disks are copied into pool {req.target_pool} on {target.name}."
            if data["keep_source_volumes"]:
                text += f" The copy on {domain.host.name} is kept (listed as left over on its host page)."
            else:
                text += f" Once the move is verified, the copy on {domain.host.name} is removed."
        if data["eject_media"]:
            text += " CD-ROM and floppy images the target cannot see are ejected for the move."
        return text


def policy_label(label: str, description: str) -> SafeString:
    # A radio choice's label with its description beneath; both are our own
    # constant strings (policies.py), escaped here all the same.

    return format_html('<strong>{}</strong> <span class="muted small">{}</span>', label, description)
