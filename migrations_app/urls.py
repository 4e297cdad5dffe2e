from django.urls import path

from . import views

urlpatterns = [
    path("migrations/<int:pk>/", views.migration_detail, name="migration-detail"),
]
