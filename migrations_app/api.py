from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from . import services
from .models import AuditEntry, Migration
from .serializers import AuditEntrySerializer, MigrationRequestSerializer, MigrationSerializer


def refused(e):
    body = {"detail": e.message}
    if e.field:
        body[e.field] = [e.message]
    return Response(body, status=e.status)


class MigrationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Migrations: request one (or only check it, with dry_run), follow it, cancel it."""

    queryset = Migration.objects.all()
    serializer_class = MigrationSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        params = self.request.query_params
        if params.get("status"):
            qs = qs.filter(status=params["status"])
        if params.get("domain"):
            qs = qs.filter(domain_name=params["domain"])
        return qs

    @extend_schema(request=MigrationRequestSerializer, responses={201: MigrationSerializer})
    def create(self, request):
        form = MigrationRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        dry = data.pop("dry_run")
        data["target"] = data.pop("target_host")
        req = services.Request(**data)
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

    @extend_schema(request=None, responses=MigrationSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        migration = self.get_object()
        try:
            services.cancel(request.user, migration)
        except services.MigrationRefused as e:
            return refused(e)
        migration.refresh_from_db()
        return Response(MigrationSerializer(migration).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(
    parameters=[
        OpenApiParameter("domain", str),
        OpenApiParameter("host", str),
        OpenApiParameter("user", str),
        OpenApiParameter("action", str),
        OpenApiParameter("outcome", str),
        OpenApiParameter("since", str, description="ISO 8601"),
        OpenApiParameter("until", str, description="ISO 8601"),
        OpenApiParameter("migration", int),
    ]
)
class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first. Append-only: there is no way to change it here."""

    serializer_class = AuditEntrySerializer

    def get_queryset(self):
        return filter_audit(AuditEntry.objects.all(), self.request.query_params)


def filter_audit(qs, params):
    from django.db.models import Q

    if params.get("domain"):
        qs = qs.filter(domain_name=params["domain"])
    if params.get("host"):
        qs = qs.filter(Q(source_name=params["host"]) | Q(target_name=params["host"]))
    if params.get("user"):
        qs = qs.filter(username=params["user"])
    if params.get("action"):
        qs = qs.filter(action=params["action"])
    if params.get("outcome"):
        qs = qs.filter(outcome=params["outcome"])
    if params.get("migration"):
        qs = qs.filter(migration_id=params["migration"])
    for name, lookup in (("since", "at__gte"), ("until", "at__lte")):
        if params.get(name):
            qs = qs.filter(**{lookup: _moment(name, params[name])})
    return qs


def _moment(name, value):
    """A date (the whole day: 'until' includes it) or a date and time, made aware."""
    from datetime import date, datetime, time

    from django.utils import timezone

    try:
        day = date.fromisoformat(value)
    except ValueError:
        when = parse_datetime(value)
        if when is None:
            raise ValidationError(
                {name: f"'{value}' is not a date (YYYY-MM-DD) or a date and time (ISO 8601)."}
            ) from None
        return when if timezone.is_aware(when) else timezone.make_aware(when)
    return timezone.make_aware(datetime.combine(day, time.max if name == "until" else time.min))
