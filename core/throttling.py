"""DRF's rate throttles, telling clients apart by kvmweb's client-address rule.

DRF's own identify an anonymous client by ``X-Forwarded-For`` whenever the
header is there (``NUM_PROXIES`` unset): rotating it escaped the limit, and
writing someone else's address into it used up theirs."""

from rest_framework import throttling
from rest_framework.request import Request

from core.clientaddr import client_address


class AnonRateThrottle(throttling.AnonRateThrottle):
    def get_ident(self, request: Request) -> str:
        return client_address(request)


class UserRateThrottle(throttling.UserRateThrottle):
    def get_ident(self, request: Request) -> str:
        return client_address(request)
