"""Filter pieces the lists share (django-filter)."""

from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

import django_filters
from django import forms
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

# The largest id a database's bigint holds: anything above cannot name a row.
MAX_ID = 2**63 - 1

M = TypeVar("M", bound=Model)


class MomentField(forms.CharField):
    """A date (the whole day: an ``end`` bound includes it) or a date and time
    (ISO 8601), made aware in the site's time zone."""

    def __init__(self, *args: Any, end: bool = False, **kwargs: Any) -> None:
        self.end = end
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> datetime | None:  # type: ignore[override]  # a moment, not text
        value = super().to_python(value)
        if not value:
            return None
        try:
            # In UTC: PostgreSQL refuses offsets past 15:59 that ISO 8601 allows.
            return self._moment(value).astimezone(UTC)
        except OverflowError:  # a moment near year 1 or 9999 that UTC puts outside them
            raise forms.ValidationError(
                "'%(value)s' is too far in the past or the future.", code="invalid", params={"value": value}
            ) from None

    def _moment(self, value: str) -> datetime:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            try:
                when = parse_datetime(value)
            except ValueError:  # well-formed but impossible, as 25:00 or 30 February
                when = None
            if when is None:
                raise forms.ValidationError(
                    "'%(value)s' is not a date (YYYY-MM-DD) or a date and time (ISO 8601).",
                    code="invalid",
                    params={"value": value},
                ) from None
            return when if timezone.is_aware(when) else timezone.make_aware(when)
        return timezone.make_aware(datetime.combine(day, time.max if self.end else time.min))


class MomentFilter(django_filters.Filter):
    field_class = MomentField


class IdFilter(django_filters.NumberFilter):
    """A row id: a whole number a database can hold."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


def filter_or_400(filterset_class: Any, request: HttpRequest, queryset: QuerySet[M]) -> tuple[Any, QuerySet[M], int]:
    """The page's filterset, and the status its page answers with: 400 when a
    filter is malformed (the page then shows the form's errors and all rows)."""
    filterset = filterset_class(request.GET or None, queryset=queryset, request=request)
    if filterset.is_bound and not filterset.is_valid():
        return filterset, queryset, 400
    return filterset, filterset.qs, 200
