from django.contrib import admin, messages
from django.db import transaction
from django.template.loader import render_to_string
from django.utils.html import format_html

from . import sshkeys, sync
from .models import Domain, Host, Network, StoragePool
from .roles import is_operator


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PoolInline(ReadOnlyInline):
    model = StoragePool
    fields = ["name", "type", "target_path", "capacity", "available", "active", "shared"]
    readonly_fields = fields


class NetworkInline(ReadOnlyInline):
    model = Network
    fields = ["name", "bridge", "forward_mode", "active"]
    readonly_fields = fields


class DomainInline(ReadOnlyInline):
    model = Domain
    fk_name = "host"
    fields = ["name", "uuid", "state", "memory", "vcpus", "persistent", "autostart"]
    readonly_fields = fields


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "status", "maintenance", "status_reason", "hostname", "last_sync"]
    list_filter = ["status", "maintenance"]
    search_fields = ["name", "uri", "hostname"]
    actions = ["sync_now"]
    inlines = [PoolInline, NetworkInline, DomainInline]

    class Media:
        # The capacity bar of "Committed now": its widths are set by a script,
        # as the Content-Security-Policy allows no style attributes.
        css = {"all": ["bars.css"]}
        js = ["bars.js"]

    fieldsets = [
        (None, {"fields": ["name", "uri", "max_incoming", "max_outgoing", "migrate_tls"]}),
        (
            "SSH",
            {
                "fields": [
                    "kvmweb_ssh_key",
                    "host_key_state",
                    "ssh_fingerprint",
                    "ssh_offered_fingerprint",
                    "ssh_pinned_fingerprint",
                ],
                "description": "For qemu+ssh hosts: kvmweb logs in with its own key and trusts only a host key "
                "an operator confirmed (on the host's page), or the one whose fingerprint is pinned here.",
            },
        ),
        (
            "Capacity",
            {
                "fields": [*Host.CAPACITY_SETTINGS, "committed"],
                "description": "What guests may be promised. Empty fields take the defaults from the settings "
                "(KVMWEB_RESERVED_MEMORY_MIB, KVMWEB_MEMORY_ALLOCATION_RATIO, KVMWEB_CPU_ALLOCATION_RATIO).",
            },
        ),
        (
            "Status",
            {
                "fields": [
                    "status",
                    "status_reason",
                    "status_detail",
                    "last_seen",
                    "last_sync",
                    "maintenance",
                    "maintenance_since",
                ]
            },
        ),
        (
            "As libvirt reports it",
            {
                "fields": [
                    "hostname",
                    "libvirt_version",
                    "hypervisor_type",
                    "hypervisor_version",
                    "cpu_vendor",
                    "cpu_model",
                    "cpu_arch",
                    "cpu_count",
                    "memory_total",
                    "memory_free",
                    "hugepages",
                ]
            },
        ),
    ]
    # Maintenance is entered and left on the host's page or through the API,
    # which audit who did it; the admin only shows it.
    readonly_fields = [
        *Host.STATUS_FIELDS,
        *Host.LIBVIRT_FACTS,
        "committed",
        "maintenance",
        "maintenance_since",
        "kvmweb_ssh_key",
        "host_key_state",
        "ssh_fingerprint",
        "ssh_offered_fingerprint",
    ]

    # Labels Django would otherwise make from the names ("Ssh fingerprint").
    @admin.display(description="SSH host key")
    def host_key_state(self, obj):
        return obj.host_key_state.label

    @admin.display(description="SSH fingerprint")
    def ssh_fingerprint(self, obj):
        return obj.ssh_fingerprint or "—"

    @admin.display(description="SSH fingerprint offered, not confirmed")
    def ssh_offered_fingerprint(self, obj):
        return obj.ssh_offered_fingerprint or "—"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "ssh_pinned_fingerprint" in form.base_fields:
            form.base_fields["ssh_pinned_fingerprint"].label = "Pinned SSH fingerprint"
        return form

    @admin.display(description="kvmweb's SSH key")
    def kvmweb_ssh_key(self, obj):
        try:
            line = sshkeys.authorized_keys_line()
        except sshkeys.SSHKeyError as e:
            return e.plain
        return format_html("Run this on the host to let kvmweb log in as root:<pre>{}</pre>", line)

    @admin.display(description="Committed now")
    def committed(self, obj):
        if obj.pk is None:
            return "—"
        return render_to_string("hosts/_capacity.html", {"capacity": obj.capacity})

    def save_model(self, request, obj, form, change):
        if change and "uri" in form.changed_data:
            previous = Host.objects.get(pk=obj.pk)
            previous.forget_host_key_if_moved(obj.uri)
            obj.ssh_host_key, obj.ssh_offered_key = previous.ssh_host_key, previous.ssh_offered_key
        super().save_model(request, obj, form, change)
        if (not change or "uri" in form.changed_data) and self.has_sync_permission(request):
            # After the admin's transaction commits: a sync waits seconds for
            # libvirt, and must not hold the database's write lock meanwhile.
            transaction.on_commit(lambda: self._sync(request, [obj]))

    def has_sync_permission(self, request):
        # Staff who are not operators may look at hosts in the admin, not make kvmweb connect to them.
        return is_operator(request.user)

    @admin.action(description="Sync inventory now", permissions=["sync"])
    def sync_now(self, request, queryset):
        self._sync(request, queryset)

    def _sync(self, request, hosts):
        for host in hosts:
            result = sync.sync_host_evenly(host)
            level = messages.SUCCESS if result.online else messages.WARNING
            self.message_user(request, str(result), level)


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "state", "memory", "vcpus", "last_seen"]
    list_filter = ["state", "host"]
    search_fields = ["name", "uuid"]
    list_select_related = ["host"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
