"""Dates in the user's own time zone: the browser names its zone once in a
cookie (static/timezone.js), and each request is rendered in it. Without the
cookie (the first page, or a client without JavaScript) dates are in
TIME_ZONE; either way every date on a page shows its zone."""

import functools
import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

COOKIE = "kvmweb_tz"


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_from(value: str) -> zoneinfo.ZoneInfo | None:
    """The zone a cookie names, or None for anything that is not a known IANA name."""
    if not value or len(value) > 64 or value not in _known_zones():
        return None
    return zoneinfo.ZoneInfo(value)


class UserTimeZoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The API (and the CSV export, which writes UTC) answer the same to every client.
        zone = None if request.path.startswith("/api/") else zone_from(request.COOKIES.get(COOKIE, ""))
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
