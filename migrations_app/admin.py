from django.contrib import admin

from .models import AuditEntry, Migration


class ReadOnlyAdmin(admin.ModelAdmin):
    """Migrations are made through the form or the API, never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
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
