from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import capacity, sync
from .filters import DomainFilter
from .models import Domain, Host
from .serializers import DomainSerializer, HostDetailSerializer, HostSerializer


class HostViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Hosts kvmweb manages. Registering one reads its inventory at once."""

    queryset = capacity.with_committed(Host.objects.annotate(domain_count=Count("domains"))).order_by("name")

    def get_serializer_class(self):
        return HostDetailSerializer if self.action == "retrieve" else HostSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related("pools", "networks")
        return qs

    def perform_create(self, serializer):
        host = serializer.save()
        # An unreachable host is still registered: it shows offline with the
        # reason, and the periodic refresh picks it up once it answers.
        sync.sync_host(host)

    @extend_schema(request=None, responses=HostDetailSerializer)
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        """Refresh this host's inventory from libvirt now (operators: it opens connections to the host)."""
        host = self.get_object()
        result = sync.sync_host(host)
        host = self.get_queryset().get(pk=host.pk)
        data = HostDetailSerializer(host).data
        data["sync"] = {
            "online": result.online,
            "domains": result.domains,
            "created": result.created,
            "moved": result.moved,
            "removed": result.removed,
            "error": result.error,
        }
        return Response(data)


class DomainViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DomainSerializer
    queryset = Domain.objects.select_related("host").order_by("name", "id")
    filterset_class = DomainFilter
