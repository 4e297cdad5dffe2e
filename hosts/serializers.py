from rest_framework import serializers

from .libvirt import InvalidURI, check_hypervisor_network
from .libvirt import validate_uri as check_uri_form
from .models import Domain, DomainDefinition, Host, Network, StoragePool


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


class HostSerializer(serializers.ModelSerializer):
    domain_count = serializers.IntegerField(read_only=True, required=False)
    capacity = CapacitySerializer(read_only=True)

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
            *Host.CAPACITY_SETTINGS,
            "capacity",
            "maintenance",
            "maintenance_since",
            "domain_count",
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

    def validate_uri(self, value):
        try:
            value = check_uri_form(value)
            check_hypervisor_network(value)
        except InvalidURI as e:
            raise serializers.ValidationError(str(e)) from None
        clash = Host.objects.filter(uri=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError(f"Host '{clash.first().name}' is already registered with this URI.")
        return value


class PoolSerializer(serializers.ModelSerializer):
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
        ]


class NetworkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Network
        fields = ["name", "bridge", "forward_mode", "active"]


class HostDetailSerializer(HostSerializer):
    pools = PoolSerializer(many=True, read_only=True)
    networks = NetworkSerializer(many=True, read_only=True)

    class Meta(HostSerializer.Meta):
        fields = HostSerializer.Meta.fields + ["pools", "networks"]


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
