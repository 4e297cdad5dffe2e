from django.contrib import admin

from .models import Evacuation


@admin.register(Evacuation)
class EvacuationAdmin(admin.ModelAdmin):
    """Read-only: evacuations are started, cancelled and followed on the host's page or through the API."""

    list_display = ["id", "kind", "host_name", "status", "requested_by_name", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    search_fields = ["host_name", "requested_by_name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
