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
  opened with. Logging out closes every socket of that session (a message to
  the session's group, sent from the user_logged_out signal). Clients send
  nothing the server needs, so any frame a client sends is ignored, without
  the traceback a malformed one used to cause.
"""

import hashlib
import logging

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

log = logging.getLogger(__name__)

CLOSE_LOGGED_OUT = 4401


def _headers(scope):
    headers = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin1").lower(), value.decode("latin1"))
    return headers


def _is_secure(scope, headers):
    if scope.get("scheme") == "wss":
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.lower().removeprefix("http_").replace("_", "-")
        value = headers.get(header, "").split(",")[0].strip()
        return value == secure_value
    return False


def origin_allowed(scope):
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
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            # Refuse the handshake (HTTP 403) and end: unlike Channels'
            # WebsocketDenier, nothing is left waiting on the channel layer.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return None
        return await self.application(scope, receive, send)


def session_group(session_key):
    """A channel-layer group per login session, named by a digest (the key itself is a secret)."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


@receiver(user_logged_out)
def close_sockets_of_the_session(sender, request, **kwargs):
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if not session_key:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(session_group(session_key), {"type": "session.closed"})
    except Exception:
        # Logging out must work even when Redis does not answer.
        log.warning("could not tell the open WebSockets of a session that it ended", exc_info=True)


class SessionBoundConsumer(AsyncJsonWebsocketConsumer):
    """A JSON consumer tied to its login session; it takes no input from the client."""

    async def websocket_connect(self, message):
        self.session_group = None
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if key:
            self.session_group = session_group(key)
            await self.channel_layer.group_add(self.session_group, self.channel_name)
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message):
        if self.session_group:
            await self.channel_layer.group_discard(self.session_group, self.channel_name)
        await super().websocket_disconnect(message)

    async def session_closed(self, event):
        await self.close(code=CLOSE_LOGGED_OUT)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Nothing a client sends is needed, or trusted: drop it.
        return
