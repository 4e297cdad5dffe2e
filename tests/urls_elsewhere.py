"""A URLconf for tests/test_links.py: kvmweb's, mounted below /elsewhere/."""

from django.urls import include, path

urlpatterns = [path("elsewhere/", include("kvmweb.urls"))]
