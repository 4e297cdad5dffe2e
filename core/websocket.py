"""What every WebSocket goes through before and after a consumer sees it.

- ``SameOriginValidator``: a socket is opened only from a page of this very
  site: the Origin header's scheme, host and port must be the ones the request
  was made to (the Host header, itself one of ALLOWED_HOSTS, and ws/wss, or
  the proxy's X-Forwarded-Proto where SECURE_PROXY_SSL_HEADER says to trust
  it), or one of CSRF_TRUSTED_ORIGINS: the rule Django's CSRF check applies to
  forms. Channels' AllowedHostsOriginValidator compared the host alone, so a
  page on another port of the same machine could open a socket with the
  user's cookie.
- ``SessionBoundConsumer``: a socket belongs to the login session it was
  opened with, and lives only as long as a page request with that session
  would be let in. Logging out closes every socket of that session (a message
  to the session's group, sent from the user_logged_out signal). A change to
  the user (a new password, deactivation, removal) makes each of the user's
  sockets check its session at once; and every socket checks it every
  KVMWEB_SOCKET_RECHECK_SECONDS, which catches an expired or removed session.
  Clients send nothing the server needs, so any frame a client sends is
  ignored, without the traceback a malformed one used to cause.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import partial
from importlib import import_module
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
from django.utils.crypto import constant_time_compare

from core.publishing import send_to_groups
from core.roles import has_role

if TYPE_CHECKING:  # for an annotation only: the auth models are not imported when this module loads
    from django.contrib.auth.models import Group

log = logging.getLogger(__name__)

CLOSE_LOGGED_OUT = 4401

# ASGI's scope and messages, as Channels hands them on.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin1").lower(), value.decode("latin1"))
    return headers


def _is_secure(scope: Scope, headers: dict[str, str]) -> bool:
    if scope.get("scheme") == "wss":
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.lower().removeprefix("http_").replace("_", "-")
        value = headers.get(header, "").split(",")[0].strip()
        return value == secure_value
    return False


def origin_allowed(scope: Scope) -> bool:
    headers = _headers(scope)
    origin = headers.get("origin")
    host = headers.get("host")
    if not origin or not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    own = f"{'https' if _is_secure(scope, headers) else 'http'}://{host}".lower()
    return origin.lower() == own or origin.lower() in {o.lower() for o in settings.CSRF_TRUSTED_ORIGINS}


class SameOriginValidator:
    def __init__(self, application: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            # Refuse the handshake (HTTP 403) and end: unlike Channels'
            # WebsocketDenier, nothing is left waiting on the channel layer.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return None
        return await self.application(scope, receive, send)


def session_group(session_key: str) -> str:
    """A channel-layer group per login session, named by a digest (the key itself is a secret)."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_pk: int | str) -> str:
    return f"user-{user_pk}"


def _tell(group: str, kind: str) -> None:
    try:
        send_to_groups((group, {"type": kind}))
    except Exception:
        # Logging out or saving a user must work even when Redis does not answer;
        # the periodic check still closes what should be closed.
        log.warning("could not tell open WebSockets about a change to their session", exc_info=True)


@receiver(user_logged_out)
def close_sockets_of_the_session(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _tell(session_group(session_key), "session.closed")


def recheck_sockets_of_the_user(
    sender: Any, instance: Model, update_fields: Iterable[str] | None = None, **kwargs: Any
) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every login saves this; it changes nothing a session depends on
    group = user_group(instance.pk)
    transaction.on_commit(lambda: _tell(group, "session.recheck"))


post_save.connect(recheck_sockets_of_the_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="socket-recheck-save")
post_delete.connect(recheck_sockets_of_the_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="socket-recheck-delete")


def _recheck_users(user_pks: Iterable[int | str]) -> None:
    for pk in set(user_pks):
        group = user_group(pk)
        transaction.on_commit(
            partial(_tell, group, "session.recheck")
        )  # a lambda's default argument: mypy cannot type it


@receiver(m2m_changed, dispatch_uid="socket-recheck-groups")
def recheck_sockets_when_groups_change(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    """A role is a group: a user taken out of one (or given one) has each socket check again."""
    if sender is not get_user_model().groups.through:
        return
    if action == "pre_clear" and reverse:
        # Which users the group loses is known only before the clear.
        _recheck_users(instance.user_set.values_list("pk", flat=True))
    elif action in ("post_add", "post_remove", "post_clear"):
        if not reverse:
            _recheck_users([instance.pk])
        elif pk_set:
            _recheck_users(pk_set)


@receiver(pre_delete, sender="auth.Group", dispatch_uid="socket-recheck-group-delete")
def recheck_sockets_when_a_group_goes(sender: Any, instance: "Group", **kwargs: Any) -> None:
    _recheck_users(instance.user_set.values_list("pk", flat=True))


def session_still_good(session_key: str | None, user_pk: int | str) -> bool:
    """Whether a page request with this session would still be let in as
    this user: the session exists and has not expired, names the user, and
    carries the hash of the user's current password; the user is active and
    has a role (kvmweb's pages answer a user without one with 403)."""
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_pk):
        return False
    user = get_user_model()._default_manager.filter(pk=user_pk, is_active=True).first()
    stored = data.get(HASH_SESSION_KEY)
    if not (user and stored and constant_time_compare(stored, user.get_session_auth_hash())):
        return False

    return has_role(user)


class SessionBoundConsumer(AsyncJsonWebsocketConsumer):
    """A JSON consumer tied to its login session; it takes no input from the client."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.groups_joined: list[str] = []
        self.session_key: str | None = getattr(self.scope.get("session"), "session_key", None)
        user = self.scope.get("user")
        self.user_pk = user.pk if user is not None and user.is_authenticated else None
        self.rechecks: asyncio.Task[None] | None = None
        if self.session_key:
            self.groups_joined.append(session_group(self.session_key))
        if self.user_pk is not None:
            self.groups_joined.append(user_group(self.user_pk))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await super().websocket_connect(message)
        if self.session_key and self.user_pk is not None:
            self.rechecks = asyncio.create_task(self.recheck_every())

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.rechecks is not None:
            self.rechecks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.rechecks
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        await super().websocket_disconnect(message)

    async def session_closed(self, event: dict[str, Any]) -> None:
        await self.close(code=CLOSE_LOGGED_OUT)

    async def session_recheck(self, event: dict[str, Any]) -> None:
        await self.close_unless_session_good()

    async def recheck_every(self) -> None:
        while True:
            await asyncio.sleep(settings.KVMWEB_SOCKET_RECHECK_SECONDS)
            if not await self.close_unless_session_good():
                return

    async def close_unless_session_good(self) -> bool:
        """Close the socket if its session no longer logs its user in; whether it stays."""
        try:
            good = await database_sync_to_async(session_still_good)(self.session_key, self.user_pk)
        except Exception:
            # A database that does not answer now says nothing about the session.
            log.warning("could not check the session of an open WebSocket", exc_info=True)
            return True
        if not good:
            await self.close(code=CLOSE_LOGGED_OUT)
        return good

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Nothing a client sends is needed, or trusted: drop it.
        return
