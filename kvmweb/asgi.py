"""ASGI entry point: HTTP through Django, WebSockets through Channels.

HTTP runs Django's synchronous handler (middleware and view together) in one
of a fixed number of threads (``KVMWEB_HTTP_THREADS``), through a2wsgi.
Django's own ASGI handler gives every request a thread of its own and hops
between that thread and the event loop at each async-capable middleware: under
load a web process held a hundred threads fighting for the GIL (and as many
database connections), while the event loop that carries every WebSocket
waited its turn. Every view is synchronous, so nothing is lost.
"""

import os

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.wsgi import get_wsgi_application

from core.private import make_private

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")
make_private(settings.VAR_DIR)
# Django must be set up before anything imports models (the consumers do).
# (Django's handler answers an HttpResponse, which iterates bytes as WSGI wants; the stubs do not say so.)
django_http_app = WSGIMiddleware(get_wsgi_application(), workers=settings.KVMWEB_HTTP_THREADS)  # type: ignore[arg-type]

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from core.bodylimit import BodyLimit, limit_daphne  # noqa: E402
from core.websocket import SameOriginValidator  # noqa: E402
from dashboard.routing import websocket_urlpatterns as dashboard_sockets  # noqa: E402
from maintenance.routing import websocket_urlpatterns as maintenance_sockets  # noqa: E402
from migrations_app.routing import websocket_urlpatterns  # noqa: E402

limit_daphne()
sockets = websocket_urlpatterns + dashboard_sockets + maintenance_sockets
application = ProtocolTypeRouter(
    {
        # Static files: WhiteNoise's middleware (kvmweb.settings). Bodies over
        # DATA_UPLOAD_MAX_MEMORY_SIZE are refused before they are read.
        "http": BodyLimit(django_http_app),  # type: ignore[arg-type]  # a2wsgi types ASGI more narrowly than BodyLimit
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(sockets))),
    }
)
