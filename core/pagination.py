from collections.abc import Sequence
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework import pagination
from rest_framework.exceptions import ValidationError


def paginate(request: HttpRequest, queryset: QuerySet[Any] | Sequence[Any], per_page: int) -> dict[str, Any]:
    """One page of a list, and the request's other filters to keep in the
    pager's links (templates/_pager.html)."""
    page = Paginator(queryset, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return {"page": page, "query": query.urlencode()}


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's limit/offset, bounded: a limit above ``max_limit`` gets ``max_limit``
    rows, and an offset no list can reach is refused with 400 instead of
    overflowing the database's integers."""

    max_limit = 1000
    max_offset = 10**9

    def get_offset(self, request: Any) -> int:
        offset = super().get_offset(request)
        if offset > self.max_offset:
            raise ValidationError({self.offset_query_param: [f"Ensure this value is at most {self.max_offset}."]})
        return offset
