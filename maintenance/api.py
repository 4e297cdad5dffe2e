"""The maintenance API: plan, evacuate, return, follow, cancel."""

from typing import Any

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from core.roles import is_operator
from hosts.models import Domain, Host
from hosts.permissions import HasRole, IsOperatorOrReadOnly
from migrations_app.request import BANDWIDTH_MIB

from . import events, facts, rolling, rules, services
from .models import Evacuation, Kind, PlacementRule, RollingMaintenance, Status, rule_problem


class MaintenanceRequest(serializers.Serializer):
    dry_run = serializers.BooleanField(required=False, default=False)
    allow_partial = serializers.BooleanField(required=False, default=False)
    bandwidth_mib = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=BANDWIDTH_MIB.min,
        max_value=BANDWIDTH_MIB.max,
        default=None,
        help_text="MiB/s each move may use.",
    )


class ActivateRequest(serializers.Serializer):
    return_vms = serializers.BooleanField(required=False, default=False)


def refused(e: services.Refused) -> Response:
    return Response({"detail": e.message, **e.extra}, status=e.status)


@extend_schema(
    request=MaintenanceRequest,
    responses={200: dict, 202: dict, 409: OpenApiResponse(description="An evacuation of the host is under way.")},
)
@api_view(["POST"])
@permission_classes([IsOperatorOrReadOnly])
def maintenance(request: Request, pk: int) -> Response:
    """``{"dry_run": true}``: the plan, nothing changes. Otherwise the host goes into
    maintenance and an evacuation starts (202 with its id)."""
    host = get_object_or_404(Host, pk=pk)
    form = MaintenanceRequest(data=request.data)
    form.is_valid(raise_exception=True)
    if form.validated_data["dry_run"]:
        return Response(services.dry_run(host))
    try:
        evacuation = services.enter_maintenance(
            request.user,
            host,
            allow_partial=form.validated_data["allow_partial"],
            bandwidth_mib=form.validated_data["bandwidth_mib"],
        )
    except services.Refused as e:
        return refused(e)
    return Response(
        {"id": evacuation.pk, "url": evacuation.get_absolute_url(), **events.state(evacuation)},
        status=status.HTTP_202_ACCEPTED,
    )


@extend_schema(
    request=ActivateRequest,
    responses={200: dict, 202: dict, 409: OpenApiResponse(description="The host is not in maintenance.")},
)
@api_view(["POST"])
@permission_classes([IsOperatorOrReadOnly])
def activate(request: Request, pk: int) -> Response:
    """End maintenance; with ``return_vms``, 202 with the id of a return evacuation."""
    host = get_object_or_404(Host, pk=pk)
    form = ActivateRequest(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        evacuation = services.activate(request.user, host, return_vms=form.validated_data["return_vms"])
    except services.Refused as e:
        return refused(e)
    if evacuation is None:
        return Response({"maintenance": False})
    return Response(
        {"id": evacuation.pk, "maintenance": False, **events.state(evacuation)}, status=status.HTTP_202_ACCEPTED
    )


class EvacuationSerializer(serializers.Serializer):
    """An evacuation's full state, as its live page gets it (Evacuation.as_event);
    the fields below describe it for the schema."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Kind.choices)
    status = serializers.ChoiceField(choices=Status.choices)
    host = serializers.CharField(help_text="Its host's name; empty for a balance.")
    host_id = serializers.IntegerField(allow_null=True)
    subject = serializers.CharField(help_text="Its host's name, or 'the cluster' for a balance.")
    spread = serializers.JSONField(
        help_text="A balance's threshold, mean, before, after, balanced and cooling_down, as planned; {} otherwise."
    )
    plan = serializers.JSONField(help_text="The moves, each with its state, migrations and error.")
    unplaced = serializers.JSONField(help_text="Running VMs that fit nowhere, with the reason.")
    staying = serializers.JSONField(help_text="VMs that do not run and stay, with the reason.")
    left = serializers.JSONField(help_text="Once finished: every VM not moved, with the reason.")
    migrations = serializers.ListField(child=serializers.IntegerField())
    progress = serializers.JSONField(help_text="done, moved and total moves.")
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()

    def to_representation(self, instance: Evacuation) -> dict[str, Any]:
        return events.state(instance)


class EvacuationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Evacuations and returns: follow one, or cancel it."""

    queryset = Evacuation.objects.prefetch_related("migrations")
    serializer_class = EvacuationSerializer

    @extend_schema(
        request=None,
        responses={202: EvacuationSerializer, 409: OpenApiResponse(description="It has finished already.")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Start no more moves and cancel the running ones; each VM stays where it is."""
        evacuation = self.get_object()
        try:
            services.cancel(request.user, evacuation)
        except services.Refused as e:
            return refused(e)
        evacuation.refresh_from_db()
        return Response(events.state(evacuation), status=status.HTTP_202_ACCEPTED)


class PlacementRuleSerializer(serializers.ModelSerializer):
    vms = serializers.ListField(
        child=serializers.UUIDField(format="hex_verbose"),
        allow_empty=True,
        help_text="UUIDs of the VMs the rule binds (a domain's `uuid` in /api/domains/).",
    )
    hosts = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=Host.objects.all(), help_text="Host ids; for a pinned rule only."
    )
    kind_display = serializers.CharField(source="get_kind_display", read_only=True)

    class Meta:
        model = PlacementRule
        fields = [
            "id",
            "name",
            "kind",
            "kind_display",
            "vms",
            "hosts",
            "enabled",
            "description",
            "created_by_name",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_by_name", "created_at", "updated_at"]

    def validate_vms(self, value: list[Any]) -> list[str]:
        uuids = list(dict.fromkeys(value))
        known = set(Domain.objects.filter(uuid__in=uuids).values_list("uuid", flat=True))
        unknown = [str(u) for u in uuids if u not in known]
        if unknown:
            raise serializers.ValidationError(
                f"No VM with UUID {', '.join(unknown)} in the inventory. Take the `uuid` of a domain from "
                "/api/domains/ (refresh the host's inventory if the VM is new)."
            )
        return [str(u) for u in uuids]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs.get("kind", getattr(self.instance, "kind", ""))
        vms = attrs.get("vms", getattr(self.instance, "vms", []))
        if "hosts" in attrs:
            hosts = attrs["hosts"]
        else:
            hosts = list(self.instance.hosts.all()) if self.instance else []
        problem = rule_problem(kind, vms, hosts)
        if problem:
            raise serializers.ValidationError({"non_field_errors": [problem]})
        return attrs


class PlacementRuleViewSet(viewsets.ModelViewSet):
    """Placement rules: keep VMs apart, keep them together, or pin them to hosts.
    Every plan obeys the enabled ones; a manual migration that would break one
    fails its `placement_rules` check. Operators change them; everyone reads."""

    queryset = PlacementRule.objects.prefetch_related("hosts")
    serializer_class = PlacementRuleSerializer

    def perform_create(self, serializer: PlacementRuleSerializer) -> None:
        with transaction.atomic():
            rule = serializer.save(created_by_name=self.request.user.get_username())
            rules.audit(self.request.user, "created", rule)

    def perform_update(self, serializer: PlacementRuleSerializer) -> None:
        with transaction.atomic():
            rule = serializer.save()
            rules.audit(self.request.user, "changed", rule)

    def perform_destroy(self, instance: PlacementRule) -> None:
        with transaction.atomic():
            rules.audit(self.request.user, "removed", instance)
            instance.delete()


class BalanceRequest(serializers.Serializer):
    dry_run = serializers.BooleanField(
        required=False,
        default=True,
        help_text="true (the default): the plan only; nothing moves. false: plan and run it (operators).",
    )


@extend_schema(
    request=BalanceRequest,
    responses={
        200: dict,
        202: EvacuationSerializer,
        403: OpenApiResponse(description="Running a plan is for operators."),
        409: OpenApiResponse(description="A balance (or an evacuation) is under way, or there is nothing to move."),
    },
)
@api_view(["POST"])
@permission_classes([HasRole])
def balance(request: Request) -> Response:
    """``{"dry_run": true}``: the moves that bring every online host not in maintenance
    within ``KVMWEB_BALANCE_THRESHOLD`` points of the cluster's committed memory and
    vCPU shares, each with its predicted seconds and why; the spread before and after.
    Nothing changes.

    ``{"dry_run": false}`` (operators): plan it now and run it, each move an ordinary
    migration, as evacuations run; 202 with the run's id and ``url`` (its page; the
    API's ``/api/evacuations/<id>/`` follows it). Only one balance runs at a time."""
    form = BalanceRequest(data=request.data)
    form.is_valid(raise_exception=True)
    if form.validated_data["dry_run"]:
        return Response({"dry_run": True, **facts.plan_balance().as_dict()})
    if not is_operator(request.user):
        return Response({"detail": IsOperatorOrReadOnly.message}, status=status.HTTP_403_FORBIDDEN)
    try:
        run = services.start_balance(request.user)
    except services.Refused as e:
        return refused(e)
    return Response({"id": run.pk, "url": run.get_absolute_url(), **events.state(run)}, status=status.HTTP_202_ACCEPTED)


@extend_schema_field({"oneOf": [{"type": "string", "enum": ["operator"]}, {"type": "integer", "minimum": 0}]})
class WaitField(serializers.Field):
    """``"operator"`` (None inside: until an operator marks the host done) or a whole number of seconds."""

    default_error_messages = {
        "invalid": 'Give "operator" (wait until an operator marks each host done) or a whole number of seconds '
        f"from 0 to {rolling.MAX_WAIT_SECONDS} (the longest a host stays empty).",
    }

    def to_internal_value(self, data: object) -> int | None:
        if data == "operator":
            return None
        if isinstance(data, int) and not isinstance(data, bool) and 0 <= data <= rolling.MAX_WAIT_SECONDS:
            return data
        raise serializers.ValidationError(self.error_messages["invalid"], code="invalid")

    def to_representation(self, value: int | None) -> object:
        return "operator" if value is None else value


class RollingRequest(serializers.Serializer):
    hosts = serializers.ListField(
        child=serializers.IntegerField(),
        allow_empty=False,
        error_messages={"empty": "Give at least one host id, in the order to take them."},
        help_text="Host ids, in the order they go through maintenance.",
    )
    wait = WaitField(
        required=False,
        default=None,
        help_text='"operator" (the default): each host stays in maintenance until an operator marks it done; '
        "or seconds: at most this long, then its VMs come back (marking it done earlier still works).",
    )
    bandwidth_mib = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=BANDWIDTH_MIB.min,
        max_value=BANDWIDTH_MIB.max,
        default=None,
        help_text="MiB/s each move may use.",
    )


class RollingSerializer(serializers.Serializer):
    """A rolling maintenance's full state (maintenance.rolling.state); the fields below describe it."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Status.choices)
    wait = serializers.JSONField(help_text='"operator" or seconds.')
    hosts = serializers.JSONField(
        help_text="In order, each with its state (waiting, evacuating, maintenance, returning, done, failed, "
        "stopped, skipped), evacuation and return ids, deadline and seconds_left while it waits, and a note."
    )
    current = serializers.CharField(allow_null=True, help_text="The host in hand now.")
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()

    def to_representation(self, instance: RollingMaintenance) -> dict[str, Any]:
        return rolling.state(instance)


class RollingViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rolling maintenance: hosts emptied, kept in maintenance and given their VMs back, one at a time.
    Operators start, mark done and cancel; everyone reads."""

    queryset = RollingMaintenance.objects.prefetch_related("entries")
    serializer_class = RollingSerializer

    @extend_schema(request=RollingRequest, responses={202: RollingSerializer, 400: dict})
    def create(self, request: Request) -> Response:
        """Start one over ``hosts`` (ids, in order). 400 names what is wrong: an unknown, repeated,
        offline host, one in maintenance already, or a rolling maintenance already under way."""
        form = RollingRequest(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            started = rolling.start(
                request.user,
                form.validated_data["hosts"],
                form.validated_data["wait"],
                form.validated_data["bandwidth_mib"],
            )
        except rolling.Refused as e:
            return refused(e)
        return Response(rolling.state(started), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: RollingSerializer, 409: OpenApiResponse(description="No host waits to be marked done.")},
    )
    @action(detail=True, methods=["post"])
    def done(self, request: Request, pk: str | None = None) -> Response:
        """The host in maintenance is done: bring its VMs back, then go on to the next host."""
        current = self.get_object()
        try:
            rolling.mark_done(request.user, current)
        except rolling.Refused as e:
            return refused(e)
        return Response(rolling.state(current), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={202: RollingSerializer, 409: OpenApiResponse(description="It has finished already.")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Start nothing more and stop the evacuation or return under way; hosts stay as they are."""
        current = self.get_object()
        try:
            rolling.cancel(request.user, current)
        except rolling.Refused as e:
            return refused(e)
        current.refresh_from_db()
        return Response(rolling.state(current), status=status.HTTP_202_ACCEPTED)
