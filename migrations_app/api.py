from typing import Any

import django_rq
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.models import Domain
from hosts.permissions import IsOperatorOrReadOnly

from . import jobs, measure, services
from .filters import AuditFilter, MigrationFilter
from .models import AuditEntry, Migration
from .request import MigrationRequest
from .serializers import AuditEntrySerializer, MigrationRequestSerializer, MigrationSerializer


class CheckResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    result = serializers.ChoiceField(choices=["pass", "warn", "fail"])
    message = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)


class DryRunSerializer(serializers.Serializer):
    """What ``"dry_run": true`` answers: the pre-flight checks, nothing started."""

    dry_run = serializers.BooleanField()
    ok = serializers.BooleanField(help_text="No check failed: the migration may be requested.")
    checks = CheckResultSerializer(many=True)


def refused(e: services.MigrationRefused) -> Response:
    body: dict[str, Any] = {"detail": e.message}
    if e.field:
        body[e.field] = [e.message]
    if e.running is not None:
        body["migration"] = {"id": e.running.pk, "url": e.running.get_absolute_url()}
    return Response(body, status=e.status)


class MigrationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Migrations: request one (or only check it, with dry_run), follow it, cancel it."""

    queryset = Migration.objects.all()
    serializer_class = MigrationSerializer
    filterset_class = MigrationFilter

    @extend_schema(
        request=MigrationRequestSerializer,
        responses={
            200: OpenApiResponse(DryRunSerializer, description='"dry_run": true: the pre-flight checks only.'),
            201: OpenApiResponse(MigrationSerializer, description="The migration, queued."),
            409: OpenApiResponse(
                description="Refused: the VM is being migrated already, or the target is in maintenance."
            ),
        },
    )
    def create(self, request: Request) -> Response:
        form = MigrationRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        req = MigrationRequest.from_fields(form.validated_data)
        dry = form.validated_data["dry_run"]
        try:
            if dry:
                results = services.dry_run(request.user, req)
                return Response(
                    {
                        "dry_run": True,
                        "ok": all(r.result != "fail" for r in results),
                        "checks": [r.as_dict() for r in results],
                    }
                )
            migration = services.request_migration(request.user, req)
        except services.MigrationRefused as e:
            return refused(e)
        return Response(MigrationSerializer(migration).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={
            202: OpenApiResponse(MigrationSerializer, description="Cancelling (or cancelled, if it had not started)."),
            409: OpenApiResponse(description="It has finished: there is nothing to cancel."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        migration = self.get_object()
        try:
            services.cancel(request.user, migration)
        except services.MigrationRefused as e:
            return refused(e)
        migration.refresh_from_db()
        return Response(MigrationSerializer(migration).data, status=status.HTTP_202_ACCEPTED)


class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first. Append-only: there is no way to change it here."""

    serializer_class = AuditEntrySerializer
    queryset = AuditEntry.objects.all()
    filterset_class = AuditFilter


@extend_schema(
    request=None,
    responses={
        200: OpenApiResponse(description="What is known of the VM's dirty rate: sampled, history, each with age."),
        202: OpenApiResponse(description="Measuring (a few seconds): GET this address for the figures."),
        409: OpenApiResponse(description="The VM is not running: there is nothing to measure."),
    },
)
@api_view(["GET", "POST"])
@permission_classes([IsOperatorOrReadOnly])
def domain_measure(request: Request, pk: int) -> Response:
    """POST (operators): measure the VM's dirty rate now, as a short job; GET: the figures known
    (libvirt's page sampling, and what its earlier migrations measured), each with its source and age."""
    domain = get_object_or_404(Domain.objects.select_related("host"), pk=pk)
    if request.method == "POST":
        if domain.state != "running":
            return Response(
                {"detail": f"{domain.name} is {domain.state}: only a running VM dirties memory. Start it first."},
                status=status.HTTP_409_CONFLICT,
            )
        job = django_rq.get_queue("default").enqueue(jobs.measure_domain, domain.pk)
        return Response({"job": job.id, "measuring": True}, status=status.HTTP_202_ACCEPTED)
    return Response(measure.known(domain.uuid))
