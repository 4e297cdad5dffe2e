from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.roles import is_operator

from . import capacity, sshkeys
from .libvirt import InvalidURI, check_hypervisor_network, check_uri
from .libvirt import validate_uri as check_uri_form
from .models import (
    Domain,
    DomainDefinition,
    Host,
    Network,
    PoolSharing,
    StoragePool,
    endpoint_clash_message,
    host_at_endpoint,
)
from .volumes import leftovers


class CapacitySerializer(serializers.Serializer):
    """Committed against capacity (hosts/capacity.py); bytes, and the effective settings."""

    memory_total = serializers.IntegerField()
    memory_reserved = serializers.IntegerField()
    hugepage_pool = serializers.IntegerField()
    memory_ratio = serializers.FloatField()
    memory_capacity = serializers.IntegerField()
    memory_committed = serializers.IntegerField()
    memory_incoming = serializers.IntegerField(help_text="Of memory_committed, what is on its way in.")
    memory_room = serializers.IntegerField()
    memory_percent = serializers.IntegerField()
    cpu_count = serializers.IntegerField()
    cpu_ratio = serializers.FloatField()
    vcpu_capacity = serializers.IntegerField()
    vcpus_committed = serializers.IntegerField()
    incoming = serializers.IntegerField(help_text="Guests on their way in, counted in the committed figures.")

    def to_representation(self, instance: Any) -> Any:
        # A host (HostSerializer's field, source="*"): its figures, read again if it was fetched without them.
        if isinstance(instance, Host):
            instance = capacity.for_any(instance)
        return super().to_representation(instance)


class HostSerializer(serializers.ModelSerializer):
    domain_count = serializers.IntegerField(read_only=True, required=False)
    capacity = CapacitySerializer(read_only=True, source="*")
    fingerprint = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="SHA256:... of the host's SSH host key, to trust it at once instead of confirming it later.",
    )
    host_key_state = serializers.CharField(read_only=True)
    ssh_fingerprint = serializers.CharField(read_only=True, help_text="The SSH host key kvmweb trusts.")
    ssh_offered_fingerprint = serializers.CharField(
        read_only=True, help_text="The SSH host key the host offers that nobody has confirmed yet."
    )

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "uri",
            "status",
            "status_reason",
            "status_detail",
            "last_seen",
            "last_sync",
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
            "max_incoming",
            "max_outgoing",
            "migrate_tls",
            *Host.CAPACITY_SETTINGS,
            "capacity",
            "maintenance",
            "maintenance_since",
            "domain_count",
            "fingerprint",
            "host_key_state",
            "ssh_fingerprint",
            "ssh_offered_fingerprint",
        ]
        # What sync writes, and maintenance (changed only through
        # /api/hosts/{id}/maintenance/ and /activate/, which audit it); an API
        # client only names the host and its URI.
        read_only_fields = [*Host.STATUS_FIELDS, *Host.LIBVIRT_FACTS, "maintenance", "maintenance_since"]
        extra_kwargs = {
            "uri": {
                # validate_uri below does both the form check and the clash
                # check, naming the host that already has the URI.
                "validators": [],
                "error_messages": {"blank": "The libvirt URI is empty. Use a form like qemu+ssh://root@kvm02/system."},
            }
        }

    def to_representation(self, instance: Host) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        request = self.context.get("request")
        if request is not None and not is_operator(request.user):
            # libvirt's own words can quote files and internal details: operators only.
            data["status_detail"] = ""
        return data

    def validate_uri(self, value: str) -> str:
        try:
            value = check_uri_form(value)
            check_hypervisor_network(value)
        except InvalidURI as e:
            raise serializers.ValidationError(str(e)) from None
        other = host_at_endpoint(value, exclude_pk=self.instance.pk if self.instance is not None else None)
        if other is not None:
            raise serializers.ValidationError(endpoint_clash_message(other, value))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        fingerprint = (attrs.pop("fingerprint", "") or "").strip()
        if not fingerprint:
            return attrs
        uri = attrs.get("uri") or (self.instance.uri if self.instance else "")
        parsed = check_uri(uri)
        if parsed.transport not in ("ssh", "libssh"):
            raise serializers.ValidationError(
                {"fingerprint": "A fingerprint pins an SSH host key: this URI is not SSH."}
            )
        if not fingerprint.upper().startswith("SHA256:"):
            raise serializers.ValidationError(
                {"fingerprint": "Give the SHA256 fingerprint, as `ssh-keygen -lf` prints it: SHA256:..."}
            )
        attrs["ssh_pinned_fingerprint"] = fingerprint
        try:
            offered = sshkeys.scan(parsed.host, parsed.port, timeout=settings.KVMWEB_CONNECT_TIMEOUT)
        except sshkeys.SSHKeyError:
            return attrs  # the host does not answer now: the pin is checked when it does
        if not sshkeys.same_fingerprint(fingerprint, sshkeys.fingerprint(offered)):
            raise serializers.ValidationError(
                {
                    "fingerprint": f"{parsed.host} offers the SSH host key {sshkeys.fingerprint(offered)}, "
                    f"not {fingerprint}. Check the fingerprint on the host (ssh-keygen -lf "
                    "/etc/ssh/ssh_host_ed25519_key.pub); if the host is the right one, register it without a "
                    "fingerprint and confirm the key it shows."
                }
            )
        attrs.update(ssh_host_key=offered, ssh_offered_key="", ssh_pinned_fingerprint="")
        return attrs

    def update(self, instance: Host, validated_data: dict[str, Any]) -> Host:
        if "uri" in validated_data and "ssh_host_key" not in validated_data:
            instance.forget_host_key_if_moved(validated_data["uri"])
        return super().update(instance, validated_data)


class TrustSerializer(serializers.Serializer):
    fingerprint = serializers.CharField(max_length=100, help_text="SHA256:... as the host shows it.")


class PoolSharingSerializer(serializers.ModelSerializer):
    peer = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = PoolSharing
        fields = ["peer", "peer_pool", "shared", "checked_at"]
        read_only_fields = fields


class PoolSerializer(serializers.ModelSerializer):
    # What the shared-storage pre-flight check found of this pool, per other host.
    sharing = PoolSharingSerializer(many=True, read_only=True)

    class Meta:
        model = StoragePool
        fields = [
            "name",
            "type",
            "target_path",
            "capacity",
            "allocation",
            "available",
            "active",
            "shared",
            "marked_shared",
            "sharing",
        ]


class NetworkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Network
        fields = ["name", "bridge", "forward_mode", "active"]


class LeftoverSerializer(serializers.Serializer):
    pool = serializers.CharField()
    name = serializers.CharField()
    path = serializers.CharField()
    capacity = serializers.IntegerField()
    allocation = serializers.IntegerField()
    vm = serializers.CharField(help_text="The VM elsewhere whose disk is named like it; empty if none.")
    vm_host = serializers.CharField()
    migration = serializers.IntegerField(allow_null=True, help_text="The migration that recorded leaving it.")
    reason = serializers.CharField(help_text='"left over from migration #N" or "not used by any VM here".')


class HostDetailSerializer(HostSerializer):
    pools = PoolSerializer(source="pools_with_sharing", many=True, read_only=True)
    networks = NetworkSerializer(many=True, read_only=True)
    leftovers = serializers.SerializerMethodField()

    class Meta(HostSerializer.Meta):
        fields = HostSerializer.Meta.fields + ["pools", "networks", "leftovers"]

    @extend_schema_field(LeftoverSerializer(many=True))
    def get_leftovers(self, host: Host) -> list[dict[str, Any]]:

        return LeftoverSerializer(leftovers(host), many=True).data


class RemoveVolumeSerializer(serializers.Serializer):
    pool = serializers.CharField(max_length=255)
    name = serializers.CharField(max_length=255)


class DefinitionSerializer(serializers.ModelSerializer):
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = DomainDefinition
        fields = ["host", "state", "persistent", "last_seen"]
        read_only_fields = fields


class DomainSerializer(serializers.ModelSerializer):
    """A VM, once, where it runs (or, if it runs nowhere, where it is defined);
    ``also_defined`` lists its definitions on other hosts."""

    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host_id = serializers.IntegerField(read_only=True)
    also_defined = DefinitionSerializer(source="other_definitions", many=True, read_only=True)
    running_on = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "uuid",
            "host",
            "host_id",
            "state",
            "memory",
            "max_memory",
            "hugepage_kib",
            "vcpus",
            "persistent",
            "autostart",
            "disks",
            "interfaces",
            "last_seen",
            "split_brain",
            "running_on",
            "also_defined",
        ]
        read_only_fields = fields


class RemoveDefinitionSerializer(serializers.Serializer):
    host = serializers.SlugField(help_text="The name of the host whose stale definition to remove.")
