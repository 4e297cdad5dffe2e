from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from hosts.api import DomainViewSet, HostViewSet
from kvmweb.metrics import metrics
from maintenance import api as maintenance_api
from migrations_app.api import AuditViewSet, MigrationViewSet

router = DefaultRouter()
# "api-" basenames keep the API's URL names apart from the pages' (host-detail...).
router.register("hosts", HostViewSet, basename="api-host")
router.register("domains", DomainViewSet, basename="api-domain")
router.register("migrations", MigrationViewSet, basename="api-migration")
router.register("audit", AuditViewSet, basename="api-audit")
router.register("evacuations", maintenance_api.EvacuationViewSet, basename="api-evacuation")

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/hosts/<int:pk>/maintenance/", maintenance_api.maintenance, name="api-host-maintenance"),
    path("api/hosts/<int:pk>/activate/", maintenance_api.activate, name="api-host-activate"),
    path("api/", include(router.urls)),
    path("metrics", metrics, name="metrics"),
    path("", include("maintenance.urls")),
    path("", include("migrations_app.urls")),
    path("", include("hosts.urls")),
]
