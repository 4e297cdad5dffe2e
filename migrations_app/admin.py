from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from .models import AuditEntry, Migration


# Generic only to mypy (django-stubs), not at run time: hence type-arg ignored.
class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Migrations are made through the form or the API, never edited here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


@admin.register(Migration)
class MigrationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "domain_name",
        "source_name",
        "target_name",
        "mode",
        "status",
        "created_at",
        "requested_by_name",
    ]
    list_filter = ["status", "mode", "storage"]
    search_fields = ["domain_name", "source_name", "target_name", "requested_by_name"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log is append-only: no add, change or delete, not even for superusers."""

    list_display = ["at", "username", "action", "domain_name", "outcome", "message"]
    list_filter = ["action", "outcome"]
    search_fields = ["domain_name", "username", "message"]
    date_hierarchy = "at"
