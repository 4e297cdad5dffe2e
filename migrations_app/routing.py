from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/migrations/<int:pk>/", consumers.MigrationConsumer.as_asgi()),
]
