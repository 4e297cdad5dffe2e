"""The migration list's and the audit log's filters: one definition each for
the page and the API (and the audit log's CSV export)."""

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from core.filters import IdFilter, MomentFilter
from core.formatting import outcome_label

from .models import AuditAction, AuditEntry, Migration, Status


class MigrationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Status.choices)
    domain = django_filters.CharFilter(field_name="domain_name", help_text="The VM's name")

    class Meta:
        model = Migration
        fields = ["status", "domain"]


class AuditFilter(django_filters.FilterSet):
    domain = django_filters.CharFilter(
        field_name="domain_name", widget=forms.TextInput(attrs={"placeholder": "VM name"}), help_text="The VM's name"
    )
    host = django_filters.CharFilter(
        method="filter_host", widget=forms.TextInput(attrs={"placeholder": "Host"}), help_text="Source or target"
    )
    user = django_filters.CharFilter(field_name="username", widget=forms.TextInput(attrs={"placeholder": "User"}))
    action = django_filters.ChoiceFilter(choices=AuditAction.choices, empty_label="Any action")
    # Free text for the API; the page offers the outcomes recorded so far.
    outcome = django_filters.CharFilter(widget=forms.Select)
    since = MomentFilter(
        field_name="at",
        lookup_expr="gte",
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="A date (YYYY-MM-DD) or a date and time (ISO 8601)",
    )
    until = MomentFilter(
        field_name="at",
        lookup_expr="lte",
        label="To",
        end=True,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="A date (the whole day counts) or a date and time (ISO 8601)",
    )
    migration = IdFilter(field_name="migration_id", widget=forms.HiddenInput)

    class Meta:
        model = AuditEntry
        fields = ["domain", "host", "user", "action", "outcome", "since", "until", "migration"]

    def offer_recorded_outcomes(self) -> None:
        """For the page: the outcome select lists what has been recorded, in words
        (pre-flight checks record pass/warn/fail, migrations succeeded/failed/...)."""
        outcomes = AuditEntry.objects.order_by().exclude(outcome="").values_list("outcome", flat=True).distinct()
        self.form.fields["outcome"].widget.choices = [("", "Any outcome")] + sorted(
            ((o, outcome_label(o)) for o in set(outcomes)), key=lambda choice: choice[1]
        )

    def filter_host(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        # data__host: host key confirmations recorded before AuditEntry.record
        # took a host kept its name there (the log is never rewritten).
        return queryset.filter(Q(source_name=value) | Q(target_name=value) | Q(data__host=value))
