from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import format_html

from core.roles import is_operator

from . import capacity, sshkeys, sync
from .models import Domain, Host, Network, StoragePool


# The admin classes are generic only to mypy (django-stubs), not at run time: hence type-arg ignored.
class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class PoolInline(ReadOnlyInline):
    model = StoragePool
    fields = readonly_fields = ("name", "type", "target_path", "capacity", "available", "active", "shared")


class NetworkInline(ReadOnlyInline):
    model = Network
    fields = readonly_fields = ("name", "bridge", "forward_mode", "active")


class DomainInline(ReadOnlyInline):
    model = Domain
    fk_name = "host"
    fields = readonly_fields = ("name", "uuid", "state", "memory", "vcpus", "persistent", "autostart")


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
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
    def host_key_state(self, obj: Host) -> str:
        return str(obj.host_key_state.label)

    @admin.display(description="SSH fingerprint")
    def ssh_fingerprint(self, obj: Host) -> str:
        return obj.ssh_fingerprint or "—"

    @admin.display(description="SSH fingerprint offered, not confirmed")
    def ssh_offered_fingerprint(self, obj: Host) -> str:
        return obj.ssh_offered_fingerprint or "—"

    def get_form(
        self, request: HttpRequest, obj: Host | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Host]]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "ssh_pinned_fingerprint" in form.base_fields:
            form.base_fields["ssh_pinned_fingerprint"].label = "Pinned SSH fingerprint"
        return form

    @admin.display(description="kvmweb's SSH key")
    def kvmweb_ssh_key(self, obj: Host) -> str:
        try:
            line = sshkeys.authorized_keys_line()
        except sshkeys.SSHKeyError as e:
            return e.plain
        return format_html("Run this on the host to let kvmweb log in as root:<pre>{}</pre>", line)

    @admin.display(description="Committed now")
    def committed(self, obj: Host) -> str:
        if obj._state.adding:  # the add form: no host yet
            return "—"
        return render_to_string("hosts/_capacity.html", {"capacity": capacity.for_any(obj)})

    def save_model(self, request: HttpRequest, obj: Host, form: forms.ModelForm[Host], change: bool) -> None:
        if change and "uri" in form.changed_data:
            previous = Host.objects.get(pk=obj.pk)
            previous.forget_host_key_if_moved(obj.uri)
            obj.ssh_host_key, obj.ssh_offered_key = previous.ssh_host_key, previous.ssh_offered_key
        super().save_model(request, obj, form, change)
        if (not change or "uri" in form.changed_data) and self.has_sync_permission(request):
            # After the admin's transaction commits: a sync waits seconds for
            # libvirt, and must not hold the database's write lock meanwhile.
            transaction.on_commit(lambda: self._sync(request, [obj]))

    def has_sync_permission(self, request: HttpRequest) -> bool:
        # Staff who are not operators may look at hosts in the admin, not make kvmweb connect to them.
        return is_operator(request.user)

    @admin.action(description="Sync inventory now", permissions=["sync"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        self._sync(request, queryset)

    def _sync(self, request: HttpRequest, hosts: Iterable[Host]) -> None:
        for host in hosts:
            result = sync.sync_host_evenly(host)
            level = messages.SUCCESS if result.online else messages.WARNING
            self.message_user(request, str(result), level)


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "host", "state", "memory", "vcpus", "last_seen"]
    list_filter = ["state", "host"]
    search_fields = ["name", "uuid"]
    list_select_related = ["host"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Domain | None = None) -> bool:
        return False
