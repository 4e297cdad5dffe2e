"""Limits on password logins: kvmweb's own small rule (it replaced django-axes).

django-axes locked (user name, address) for 15 minutes after 5 wrong
passwords, and every further attempt renewed the lock. Behind a proxy every
client had the proxy's address, so anyone could keep the admin locked out for
good; one password tried across many user names was never limited; and each
login's password hashing took an HTTP thread for its whole length, so a
dozen anonymous logins at once starved every page.

The rule here:

- Wrong passwords are counted per user name (from anywhere) and per client
  address (any user name; the address by core.clientaddr). Counts are kept in
  the cache (Redis) and forgotten ``KVMWEB_LOGIN_COOLOFF_MINUTES`` after the
  last failure.
- Past ``KVMWEB_LOGIN_FAILURE_LIMIT`` failures for a user name, each further
  attempt for it must come a delay after the last failure: 1 s, doubling with
  each failure, at most ``USER_MAX_DELAY`` (60 s). Earlier attempts are answered
  429 with Retry-After, without checking the password and without counting.
  So guessing one account is slowed to one try a minute, and whoever guesses
  delays its owner by a minute at most: there is no wall to renew.
- Past ``ADDRESS_FACTOR`` times that many failures from one address (whatever
  user names), the same doubling delay applies to that address, up to the
  cool-off time: it holds back only that address.
- At most ``HASHING_AT_ONCE`` password checks run at a time in a web process;
  a login that comes while they run is answered 429 at once (Retry-After: 1),
  so logins never hold more than that many HTTP threads.
"""

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from core.clientaddr import client_address

USER_MAX_DELAY = 60
ADDRESS_FACTOR = 4
HASHING_AT_ONCE = 1

_hashing = threading.BoundedSemaphore(HASHING_AT_ONCE)
REFUSED = "_kvmweb_login_refused"


def _key(kind: str, value: str) -> str:
    return f"kvmweb:login:{kind}:" + hashlib.sha256(value.encode()).hexdigest()[:32]


def _counters(request: HttpRequest, username: str) -> list[tuple[str, int, float]]:
    """(cache key, limit, longest delay) of each count this attempt belongs to."""
    limit = settings.KVMWEB_LOGIN_FAILURE_LIMIT
    cooloff = settings.KVMWEB_LOGIN_COOLOFF_MINUTES * 60
    return [
        (_key("user", (username or "").casefold()), limit, min(USER_MAX_DELAY, cooloff)),
        (_key("address", client_address(request)), limit * ADDRESS_FACTOR, cooloff),
    ]


def wait_seconds(request: HttpRequest, username: str, now: float | None = None) -> float:
    """How long this login attempt must still wait (0: it may be tried now)."""
    now = time.time() if now is None else now
    wait = 0.0
    for key, limit, longest in _counters(request, username):
        count = cache.get(key)
        if not isinstance(count, dict) or count.get("n", 0) < limit:
            continue
        delay = min(2.0 ** (count["n"] - limit), longest)
        wait = max(wait, count.get("last", 0) + delay - now)
    return max(wait, 0.0)


def _refuse(request: HttpRequest | None, seconds: float, message: str) -> NoReturn:
    if request is not None:
        setattr(request, REFUSED, (max(1, int(seconds + 0.999)), message))
    raise PermissionDenied(message)


class LimitedModelBackend(ModelBackend):
    """Django's password check, within the limits above."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None:
            username = kwargs.get(self._username_field(), "")
        if request is not None:
            wait = wait_seconds(request, username or "")
            if wait > 0:
                _refuse(
                    request,
                    wait,
                    f"Too many wrong passwords for this account or from this address. "
                    f"Wait {max(1, int(wait + 0.999))} seconds, then try again.",
                )
        if not _hashing.acquire(blocking=False):
            _refuse(request, 1, "kvmweb is checking other logins right now. Try again in a second.")
        try:
            return super().authenticate(request, username=username, password=password, **kwargs)
        finally:
            _hashing.release()

    def _username_field(self) -> str:

        return get_user_model().USERNAME_FIELD


@receiver(user_login_failed, dispatch_uid="kvmweb-count-login-failure")
def count_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    if request is None or getattr(request, REFUSED, None):
        return  # refused before the password was looked at: not counted
    now = time.time()
    timeout = settings.KVMWEB_LOGIN_COOLOFF_MINUTES * 60
    for key, _limit, _longest in _counters(request, credentials.get("username", "")):
        count = cache.get(key)
        n = count.get("n", 0) if isinstance(count, dict) else 0
        cache.set(key, {"n": n + 1, "last": now}, timeout)


@receiver(user_logged_in, dispatch_uid="kvmweb-reset-login-failures")
def reset_user_count(sender: Any, request: HttpRequest, user: AbstractBaseUser, **kwargs: Any) -> None:
    # The address keeps its count: logging in to one's own account must not
    # clear what that address tried against others.
    cache.delete(_key("user", user.get_username().casefold()))


class LoginLimitMiddleware:
    """Answers a login refused by the limits with 429, what to do and when."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        refused = getattr(request, REFUSED, None)
        if refused is None:
            return response
        seconds, message = refused
        response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(seconds)
        return response
