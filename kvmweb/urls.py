from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from core.tokens import TokenViewSet, token_list
from hosts.api import DomainViewSet, HostViewSet
from kvmweb.metrics import metrics
from maintenance import api as maintenance_api
from migrations_app.api import AuditViewSet, MigrationViewSet, domain_measure

router = DefaultRouter()
# "api-" basenames keep the API's URL names apart from the pages' (host-detail...).
router.register("hosts", HostViewSet, basename="api-host")
router.register("domains", DomainViewSet, basename="api-domain")
router.register("migrations", MigrationViewSet, basename="api-migration")
router.register("audit", AuditViewSet, basename="api-audit")
router.register("evacuations", maintenance_api.EvacuationViewSet, basename="api-evacuation")
router.register("tokens", TokenViewSet, basename="api-token")
router.register("rules", maintenance_api.PlacementRuleViewSet, basename="api-rule")
router.register("rolling", maintenance_api.RollingViewSet, basename="api-rolling")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The API's clients read JSON, also for a URL that matches nothing (an id that is no number)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found


@login_not_required
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Pages name the icon in <link rel=icon>; this is for clients that ask for /favicon.ico anyway."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", token_list, name="account-tokens"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/hosts/<int:pk>/maintenance/", maintenance_api.maintenance, name="api-host-maintenance"),
    path("api/hosts/<int:pk>/activate/", maintenance_api.activate, name="api-host-activate"),
    path("api/cluster/balance/", maintenance_api.balance, name="api-cluster-balance"),
    path("api/domains/<int:pk>/measure/", domain_measure, name="api-domain-measure"),
    path("api/", include(router.urls)),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", favicon),
    path("", include("dashboard.urls")),
    path("", include("maintenance.urls")),
    path("", include("migrations_app.urls")),
    path("", include("hosts.urls")),
]
