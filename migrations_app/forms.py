"""The migration form (the plain-HTML path to services.request_migration) and
the audit log's filters."""

from django import forms

from hosts.models import Domain, Host, StoragePool

from .models import Mode, StorageMode
from .policies import POLICIES, policy_choices
from .request import BANDWIDTH_MIB, DEFAULTS, SHUTDOWN_TIMEOUT, MigrationRequest

FORCE_OFF_CHOICES = [
    ("", "Give up and leave it running on the source"),
    ("1", "Power it off (like pulling the plug: unsaved data in the guest is lost)"),
]


class HostChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, host):
        label = host.name
        if host.status != "online":
            label += f" ({host.get_status_display().lower()})"
        return label


class DomainChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, domain):
        return f"{domain.name} (on {domain.host.name}, {domain.get_state_display().lower()})"


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
    target_pool = forms.ChoiceField(required=False, label="Target pool (to copy the disks into)")
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
        empty_value=False,
        initial="",
        required=False,
        widget=forms.RadioSelect,
        label="If it does not shut down in time",
    )
    delete_source_volumes = forms.BooleanField(
        required=False, label="Delete the source disks once the copy is verified"
    )
    eject_media = forms.BooleanField(
        required=False, label="Eject CD-ROMs and floppies whose image the target cannot see"
    )

    def __init__(self, *args, domain=None, **kwargs):
        super().__init__(*args, **kwargs)
        if domain is not None:
            self.fields["domain"].queryset = Domain.objects.select_related("host").filter(pk=domain.pk)
            self.fields["domain"].initial = domain.pk
            self.fields["domain"].widget = forms.HiddenInput()
        # Pools grouped by host; the page shows only the chosen target's, and
        # clean() checks the pool really is on the target.
        groups = {}
        for pool in StoragePool.objects.select_related("host").filter(active=True).order_by("host__name", "name"):
            groups.setdefault(pool.host.name, []).append((pool.name, f"{pool.name} ({pool.type})"))
        self.fields["target_pool"].choices = [("", "—")] + list(groups.items())
        self.fields["policy"].widget.choices = [
            (p.name, policy_label(p.label, p.description)) for p in POLICIES.values()
        ]

    def clean(self):
        data = super().clean()
        target, pool = data.get("target_host"), data.get("target_pool")
        for name, default in DEFAULTS.items():
            if name in data and data[name] in (None, ""):
                data[name] = default
        if data.get("storage") != StorageMode.COPY:
            data["target_pool"] = ""
        elif target and pool and not target.pools.filter(name=pool).exists():
            self.add_error("target_pool", f"{target.name} has no storage pool named {pool}.")
        if data.get("mode") != Mode.COLD:
            data["force_off"] = False
        return data

    def to_request(self):
        return MigrationRequest.from_fields(self.cleaned_data)

    def add_refusal(self, refused):
        """Show a services.MigrationRefused beside the field it is about."""
        field = refused.field if refused.field in self.fields else None
        self.add_error(field, refused.message)

    def summary(self):
        """What will happen, in one or two sentences, for the confirmation."""
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
            if data["delete_source_volumes"]:
                text += " The source disks are deleted once the copy is verified."
        else:
            text = (
                f"{domain.name} will move from {domain.host.name} to {target.name} while it "
                "keeps running; it pauses only for the final switch-over."
            )
        if data["eject_media"]:
            text += " CD-ROM and floppy images the target cannot see are ejected for the move."
        return text


def policy_label(label, description):
    # A radio choice's label with its description beneath; both are our own
    # constant strings (policies.py), escaped here all the same.
    from django.utils.html import format_html

    return format_html('<strong>{}</strong> <span class="muted small">{}</span>', label, description)
