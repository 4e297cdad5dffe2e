from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
    path("ws/domains/<int:pk>/", consumers.DomainConsumer.as_asgi()),
]
