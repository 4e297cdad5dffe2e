from typing import Any

from rest_framework import serializers

from core.roles import is_operator
from hosts.models import Domain, Host

from .models import AuditEntry, Migration, Mode, StorageMode, plain_only
from .request import (
    BANDWIDTH_MIB,
    DEFAULTS,
    PARALLEL_CONNECTIONS,
    POLICY_MAX_LENGTH,
    RULE_OVERRIDE_MAX_LENGTH,
    SHUTDOWN_TIMEOUT,
    TARGET_POOL_MAX_LENGTH,
    parallel_connections_error,
)


class MigrationRequestSerializer(serializers.Serializer):
    """A request.MigrationRequest as the API takes it; its limits and defaults are that module's."""

    domain = serializers.PrimaryKeyRelatedField(queryset=Domain.objects.select_related("host"))
    target_host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    mode = serializers.ChoiceField(choices=Mode.choices)
    storage = serializers.ChoiceField(choices=StorageMode.choices, default=DEFAULTS["storage"])
    # Copy storage: empty takes the default pool, and the created migration shows which.
    target_pool = serializers.CharField(
        allow_blank=True, max_length=TARGET_POOL_MAX_LENGTH, default=DEFAULTS["target_pool"]
    )
    # Checked against the policies known when the request arrives (services.validate).
    policy = serializers.CharField(max_length=POLICY_MAX_LENGTH, default=DEFAULTS["policy"])
    bandwidth_mib = serializers.IntegerField(
        allow_null=True, min_value=BANDWIDTH_MIB.min, max_value=BANDWIDTH_MIB.max, default=DEFAULTS["bandwidth_mib"]
    )
    parallel_connections = serializers.IntegerField(
        min_value=0,
        max_value=PARALLEL_CONNECTIONS.max,
        default=DEFAULTS["parallel_connections"],
        help_text=f"Live: carry the memory over this many connections side by side (multifd), "
        f"{PARALLEL_CONNECTIONS.min} to {PARALLEL_CONNECTIONS.max}; 0 for one.",
    )
    shutdown_timeout = serializers.IntegerField(
        min_value=SHUTDOWN_TIMEOUT.min, max_value=SHUTDOWN_TIMEOUT.max, default=DEFAULTS["shutdown_timeout"]
    )
    force_off = serializers.BooleanField(default=DEFAULTS["force_off"])
    keep_source_volumes = serializers.BooleanField(default=DEFAULTS["keep_source_volumes"])
    eject_media = serializers.BooleanField(default=DEFAULTS["eject_media"])
    rule_override = serializers.CharField(
        default=DEFAULTS["rule_override"],
        allow_blank=True,
        max_length=RULE_OVERRIDE_MAX_LENGTH,
        help_text="Why this move may break a placement rule; empty: a move that breaks one fails its check.",
    )
    dry_run = serializers.BooleanField(default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The field that went: silently ignored, a client that sent
        # "delete_source_volumes": false would lose the source copy it meant to keep.
        if "delete_source_volumes" in (self.initial_data or {}):
            raise serializers.ValidationError(
                {
                    "delete_source_volumes": [
                        "This field is gone: after a verified copy-storage move the source's copy is now "
                        'removed by default. Send "keep_source_volumes": true to keep it, or leave both out.'
                    ]
                }
            )
        return attrs

    def validate_parallel_connections(self, value: int) -> int:
        error = parallel_connections_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value


class MigrationSerializer(serializers.ModelSerializer):
    domain = serializers.PrimaryKeyRelatedField(read_only=True)
    source_host = serializers.PrimaryKeyRelatedField(source="source", read_only=True)
    target_host = serializers.PrimaryKeyRelatedField(source="target", read_only=True)
    requested_by = serializers.CharField(source="requested_by_name", read_only=True)
    waiting_reason = serializers.SerializerMethodField(
        help_text="Queued only: why it has not started yet, with its place in line; empty otherwise."
    )

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
            "parallel_connections",
            "shutdown_timeout",
            "force_off",
            "keep_source_volumes",
            "replace_own_leftovers",
            "eject_media",
            "rule_override",
            "status",
            "phase",
            "waiting_reason",
            "was_running",
            "flags",
            "checks",
            "progress",
            "stats",
            "prediction",
            "predicted_seconds",
            "predicted_downtime_ms",
            "predicted_passes",
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

    def get_waiting_reason(self, migration: Migration) -> str:
        return migration.waiting_reason()

    def to_representation(self, instance: Migration) -> dict[str, Any]:
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
