from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/evacuations/<int:pk>/", consumers.EvacuationConsumer.as_asgi()),
]
