import pytest

from hosts.models import Host
from hosts.sync import sync_host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_hosts(tmp_path):
    for name in ("kvm01", "kvm02"):
        sync_host(Host.objects.create(name=name, uri=write_host(tmp_path, name, count=3)))


def test_domains_filter_by_host(api, viewer, two_hosts):
    api.force_authenticate(viewer)
    body = api.get("/api/domains/", {"host": "kvm02"}).json()
    assert body["count"] == 3
    assert {d["host"] for d in body["results"]} == {"kvm02"}


def test_domains_filter_by_name(api, viewer, two_hosts):
    api.force_authenticate(viewer)
    body = api.get("/api/domains/", {"name": "kvm01-vm002"}).json()
    assert [d["name"] for d in body["results"]] == ["kvm01-vm002"]
    only = body["results"][0]
    assert set(only) >= {"id", "name", "uuid", "host", "state", "memory", "vcpus", "disks"}
    assert only["disks"][0]["path"].endswith("kvm01-vm002.qcow2")


def test_filters_combine_and_an_unknown_host_gives_nothing(api, viewer, two_hosts):
    api.force_authenticate(viewer)
    assert api.get("/api/domains/", {"host": "kvm01", "name": "kvm02-vm001"}).json()["count"] == 0
    assert api.get("/api/domains/", {"host": "nope"}).json()["count"] == 0


def test_the_openapi_schema_describes_the_api(api, viewer):
    api.force_authenticate(viewer)
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    text = response.content.decode()
    assert "/api/hosts/{id}/sync/" in text and "/api/domains/" in text
