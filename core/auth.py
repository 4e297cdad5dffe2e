"""API token authentication with a throttle on wrong tokens.

DRF checks throttles only after authentication and permissions, so a client
sending wrong tokens got 401 forever and never met the anonymous rate. Here
each failed token counts against the client's address at the "anon" rate;
past it, every token request from there answers 429 until the window moves.
The address is the one core.clientaddr finds (X-Forwarded-For only from a
trusted proxy). A token names no account before it is found, so there is no
per-user count of wrong tokens; tokens are 256-bit random, not guessable.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken
from rest_framework import exceptions
from rest_framework.request import Request

from core.throttling import AnonRateThrottle


class FailedTokenThrottle(AnonRateThrottle):
    scope = "anon"
    cache_format = "throttle_failed_token_%(ident)s"

    def get_cache_key(self, request: Request, view: Any) -> str:
        # By address alone: the request has no user yet (it is being authenticated).
        return self.cache_format % {"ident": self.get_ident(request)}

    def full(self, request: Request) -> bool:
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) >= self.num_requests


class TokenAuthentication(KnoxTokenAuthentication):
    def authenticate(self, request: Request) -> Any:
        throttle = FailedTokenThrottle()
        if self.carries_token(request) and throttle.full(request):
            raise exceptions.Throttled(throttle.wait())
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.allow_request(request, None)
            raise

    def validate_user(self, auth_token: AuthToken) -> Any:
        # Tokens made before tokens expired have no expiry of their own: they
        # expire KVMWEB_TOKEN_TTL_DAYS after they were made, as new ones do.
        if expires(auth_token) <= timezone.now():
            auth_token.delete()
            raise exceptions.AuthenticationFailed("This token has expired. Ask for a new one (create_api_token).")
        return super().validate_user(auth_token)

    def carries_token(self, request: Request) -> bool:
        scheme = request.META.get("HTTP_AUTHORIZATION", "").split(maxsplit=1)[:1]
        return scheme == [self.authenticate_header(request)] or [s.lower() for s in scheme] == ["token"]


class TokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # its __init_subclass__ is untyped
    """How the OpenAPI schema describes the token header."""

    target_class = "core.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token (manage.py create_api_token), as "Token <token>".',
        }


def expires(token: AuthToken) -> datetime:
    """When a token stops working (here, not in tokens.py: DRF imports this module
    while it loads its views, which tokens.py imports)."""
    return token.expiry or token.created + timedelta(days=settings.KVMWEB_TOKEN_TTL_DAYS)
