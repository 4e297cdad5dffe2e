from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from hosts.api import DomainViewSet, HostViewSet
from kvmweb.metrics import metrics
from migrations_app.api import AuditViewSet, MigrationViewSet

router = DefaultRouter()
# "api-" basenames keep the API's URL names apart from the pages' (host-detail...).
router.register("hosts", HostViewSet, basename="api-host")
router.register("domains", DomainViewSet, basename="api-domain")
router.register("migrations", MigrationViewSet, basename="api-migration")
router.register("audit", AuditViewSet, basename="api-audit")

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include(router.urls)),
    path("metrics", metrics, name="metrics"),
    path("", include("migrations_app.urls")),
    path("", include("hosts.urls")),
]
