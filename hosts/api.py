from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from . import capacity, definitions, registration, sync, trust, volumes
from .filters import DomainFilter
from .models import Domain, Host, HostKeyRefused
from .serializers import (
    DomainSerializer,
    HostDetailSerializer,
    HostSerializer,
    RemoveDefinitionSerializer,
    RemoveVolumeSerializer,
    TrustSerializer,
)


class HostViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Hosts kvmweb manages. Registering one reads its inventory at once."""

    queryset = capacity.with_committed(Host.objects.annotate(**capacity.domain_counts())).order_by("name")

    def get_serializer_class(self) -> type[HostSerializer]:
        return HostDetailSerializer if self.action == "retrieve" else HostSerializer

    def get_queryset(self) -> QuerySet[Host]:
        qs: QuerySet[Host] = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related("pools", "networks")
        return qs

    def _detail(self, host: Host) -> dict[str, Any]:
        """The host as GET /api/hosts/{id}/ shows it, read again after an action changed it."""
        host = self.get_queryset().get(pk=host.pk)
        return HostDetailSerializer(host, context=self.get_serializer_context()).data

    def perform_create(self, serializer: HostSerializer) -> None:
        registration.register(serializer, self.request.user)

    @extend_schema(request=None, responses=HostDetailSerializer)
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Refresh this host's inventory from libvirt now (operators: it opens connections to the host)."""
        host = self.get_object()
        result = sync.sync_host_evenly(host)
        data = self._detail(host)
        data["sync"] = {
            "online": result.online,
            "domains": result.domains,
            "created": result.created,
            "moved": result.moved,
            "removed": result.removed,
            "error": result.error,
        }
        return Response(data)

    @extend_schema(request=TrustSerializer, responses=HostDetailSerializer)
    @action(detail=True, methods=["post"])
    def trust(self, request: Request, pk: str | None = None) -> Response:
        """Confirm the SSH host key the host offers (operators): {"fingerprint": "SHA256:..."}."""
        host = self.get_object()
        body = TrustSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            trust.confirm_host_key(host, body.validated_data["fingerprint"], request.user)
        except HostKeyRefused as e:
            raise ValidationError({"fingerprint": [str(e)]}) from None
        return Response(self._detail(host))

    @extend_schema(
        request=RemoveVolumeSerializer,
        responses={
            200: OpenApiResponse(HostDetailSerializer, description="The host, without that volume."),
            404: OpenApiResponse(description="No such host, pool or volume."),
            409: OpenApiResponse(description="Refused, with the reason: it is not a leftover, or it is in use."),
            502: OpenApiResponse(description="The host did not remove it, with libvirt's reason."),
        },
    )
    @action(detail=True, methods=["post"], url_path="remove-volume")
    def remove_volume(self, request: Request, pk: str | None = None) -> Response:
        """Remove a leftover volume (see ``leftovers``) from this host (operators):
        {"pool", "name"}; refused while any definition on the host uses it."""
        host = self.get_object()
        params = RemoveVolumeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            volumes.remove_volume(request.user, host, params.validated_data["pool"], params.validated_data["name"])
        except volumes.VolumeRefused as refused:
            return Response({"detail": refused.message}, status=refused.status)
        return Response(self._detail(host))


class DomainViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DomainSerializer
    queryset = Domain.objects.for_api().order_by("name", "id")
    filterset_class = DomainFilter

    def get_queryset(self) -> QuerySet[Domain]:
        # A VM's id stays valid for good: one that is gone shows as such
        # ("state": "gone"), where it was last; lists show the VMs that exist.
        if self.action == "retrieve":
            return Domain.rows.for_api().order_by("name", "id")
        return super().get_queryset()

    @extend_schema(
        request=RemoveDefinitionSerializer,
        responses={
            200: OpenApiResponse(DomainSerializer, description="The VM, without that definition."),
            400: OpenApiResponse(description="No host name given."),
            404: OpenApiResponse(description="No such VM or host."),
            409: OpenApiResponse(description="Refused, with the reason: it is not a stale definition."),
            502: OpenApiResponse(description="The host did not remove it, with libvirt's reason."),
        },
    )
    @action(detail=True, methods=["post"], url_path="remove-definition")
    def remove_definition(self, request: Request, pk: str | None = None) -> Response:
        """Remove this VM's stale definition from one host: never its disks, never
        where it runs; 409 with the reason when refused."""
        domain = self.get_object()
        params = RemoveDefinitionSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        host = get_object_or_404(Host, name=params.validated_data["host"])
        try:
            definitions.remove_definition(request.user, domain, host)
        except definitions.DefinitionRefused as refused:
            return Response({"detail": refused.message}, status=refused.status)
        return Response(DomainSerializer(Domain.objects.for_api().get(pk=domain.pk)).data)
