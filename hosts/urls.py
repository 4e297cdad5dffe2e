from django.urls import path

from . import views

urlpatterns = [
    path("hosts/", views.host_list, name="host-list"),
    path("hosts/<slug:name>/", views.host_detail, name="host-detail"),
    path("hosts/<slug:name>/sync/", views.host_sync, name="host-sync"),
    path("hosts/<slug:name>/trust/", views.host_trust, name="host-trust"),
    path("hosts/<slug:name>/volumes/remove/", views.volume_remove, name="volume-remove"),
    path("domains/", views.domain_list, name="domain-list"),
    path("domains/<uuid:uuid>/", views.domain_detail, name="domain-detail"),
    path("domains/<uuid:uuid>/definitions/<slug:host>/remove/", views.definition_remove, name="definition-remove"),
]
