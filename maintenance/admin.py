from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from . import rules
from .models import Evacuation, PlacementRule, RollingMaintenance, rule_problem


# The admin and form classes are generic only to mypy (django-stubs), not at run time: hence type-arg ignored.
@admin.register(Evacuation)
class EvacuationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: evacuations are started, cancelled and followed on the host's page or through the API."""

    list_display = ["id", "kind", "host_name", "status", "requested_by_name", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    search_fields = ["host_name", "requested_by_name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Evacuation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Evacuation | None = None) -> bool:
        return False


class PlacementRuleForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = PlacementRule
        fields = ["name", "kind", "vms", "hosts", "enabled", "description"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # a ModelForm's clean returns its cleaned_data; None only to the stubs
        problem = rule_problem(data.get("kind", ""), data.get("vms") or [], data.get("hosts") or [])
        if problem:
            raise forms.ValidationError(problem)
        return data


@admin.register(PlacementRule)
class PlacementRuleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rules name VMs by UUID (a domain's page and /api/domains/ show it); each change is audited."""

    form = PlacementRuleForm

    list_display = ["name", "kind", "enabled", "created_by_name", "updated_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "description"]
    filter_horizontal = ["hosts"]
    readonly_fields = ["created_by_name", "created_at", "updated_at"]

    def save_model(
        self, request: HttpRequest, obj: PlacementRule, form: forms.ModelForm[PlacementRule], change: bool
    ) -> None:
        if not change:
            obj.created_by_name = request.user.get_username()
        super().save_model(request, obj, form, change)

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[PlacementRule], formsets: Any, change: bool
    ) -> None:
        # The hosts are saved here, after the rule: the audit names them.
        super().save_related(request, form, formsets, change)
        rule = form.instance
        rules.audit(request.user, "changed" if change else "created", rule)

    def delete_model(self, request: HttpRequest, obj: PlacementRule) -> None:
        rules.audit(request.user, "removed", obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PlacementRule]) -> None:
        for rule in queryset:
            rules.audit(request.user, "removed", rule)
        super().delete_queryset(request, queryset)


@admin.register(RollingMaintenance)
class RollingMaintenanceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: rolling maintenance is started, marked done and cancelled on its page or through the API."""

    list_display = ["id", "status", "wait_seconds", "requested_by_name", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["requested_by_name", "entries__host_name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RollingMaintenance | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RollingMaintenance | None = None) -> bool:
        return False
