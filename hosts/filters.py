"""The virtual machine list's filters: one definition for the page and the API."""

import django_filters

from .models import Domain, DomainStateChoices


class DomainFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Name contains")
    name = django_filters.CharFilter(field_name="name", help_text="Only domains with this name")
    host = django_filters.CharFilter(field_name="host__name", help_text="Only domains on the host with this name")
    state = django_filters.ChoiceFilter(choices=DomainStateChoices.choices)

    class Meta:
        model = Domain
        fields = ["q", "name", "host", "state"]
