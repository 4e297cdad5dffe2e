from rest_framework import serializers

from hosts.models import Domain, Host
from hosts.roles import is_operator

from .models import MAX_BANDWIDTH_MIB, AuditEntry, Migration, Mode, StorageMode, plain_only
from .policies import DEFAULT_POLICY


class MigrationRequestSerializer(serializers.Serializer):
    domain = serializers.PrimaryKeyRelatedField(queryset=Domain.objects.select_related("host"))
    target_host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    mode = serializers.ChoiceField(choices=Mode.choices)
    storage = serializers.ChoiceField(choices=StorageMode.choices, default=StorageMode.SHARED)
    target_pool = serializers.CharField(required=False, allow_blank=True, default="")
    # Checked against the policies known when the request arrives (services.validate).
    policy = serializers.CharField(default=DEFAULT_POLICY, max_length=32)
    bandwidth_mib = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_BANDWIDTH_MIB, default=None
    )
    shutdown_timeout = serializers.IntegerField(required=False, min_value=5, max_value=3600, default=120)
    force_off = serializers.BooleanField(required=False, default=False)
    delete_source_volumes = serializers.BooleanField(required=False, default=False)
    eject_media = serializers.BooleanField(required=False, default=False)
    dry_run = serializers.BooleanField(required=False, default=False)


class MigrationSerializer(serializers.ModelSerializer):
    domain = serializers.PrimaryKeyRelatedField(read_only=True)
    source_host = serializers.PrimaryKeyRelatedField(source="source", read_only=True)
    target_host = serializers.PrimaryKeyRelatedField(source="target", read_only=True)
    requested_by = serializers.CharField(source="requested_by_name", read_only=True)

    class Meta:
        model = Migration
        fields = [
            "id",
            "domain",
            "domain_name",
            "domain_uuid",
            "source_host",
            "source_name",
            "target_host",
            "target_name",
            "requested_by",
            "mode",
            "storage",
            "target_pool",
            "policy",
            "bandwidth_mib",
            "shutdown_timeout",
            "force_off",
            "delete_source_volumes",
            "eject_media",
            "status",
            "phase",
            "was_running",
            "flags",
            "checks",
            "progress",
            "stats",
            "events",
            "error",
            "error_detail",
            "error_code",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        return data if request is None or is_operator(request.user) else plain_only(data)


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "username",
            "action",
            "migration",
            "domain_name",
            "source_name",
            "target_name",
            "outcome",
            "message",
            "data",
        ]
        read_only_fields = fields
