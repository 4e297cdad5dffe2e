from django.urls import path

from . import views

urlpatterns = [
    path("migrations/", views.migration_list, name="migration-index"),
    path("migrations/new/", views.migration_new, name="migration-new"),
    path("migrations/<int:pk>/", views.migration_detail, name="migration-detail"),
    path("migrations/<int:pk>/events/", views.migration_events, name="migration-events"),
    path("migrations/<int:pk>/cancel/", views.migration_cancel, name="migration-cancel-page"),
    path("domains/<uuid:uuid>/measure/", views.domain_measure, name="domain-measure"),
    path("audit/", views.audit_list, name="audit-log"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
]
