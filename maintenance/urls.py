from django.urls import path

from . import views

urlpatterns = [
    path("hosts/<slug:name>/maintenance/", views.host_maintenance, name="host-maintenance"),
    path("hosts/<slug:name>/activate/", views.host_activate, name="host-activate"),
    path("evacuations/<int:pk>/", views.evacuation_detail, name="evacuation-detail"),
    path("evacuations/<int:pk>/cancel/", views.evacuation_cancel, name="evacuation-cancel"),
    path("cluster/balance/", views.cluster_balance, name="cluster-balance"),
    path("rolling/", views.rolling_list, name="rolling-list"),
    path("rolling/<int:pk>/", views.rolling_detail, name="rolling-detail"),
    path("rolling/<int:pk>/done/", views.rolling_done, name="rolling-done"),
    path("rolling/<int:pk>/cancel/", views.rolling_cancel, name="rolling-cancel"),
]
