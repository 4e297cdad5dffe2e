"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from kvmweb.private import make_private

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")
make_private(settings.VAR_DIR)
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from kvmweb.websocket import SameOriginValidator  # noqa: E402
from maintenance.routing import websocket_urlpatterns as maintenance_sockets  # noqa: E402
from migrations_app.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files: WhiteNoise's middleware (kvmweb.settings).
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns + maintenance_sockets))),
    }
)
