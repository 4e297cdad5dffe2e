"""The dashboard and the domain list cost the same number of queries at any size."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Host
from hosts.sync import sync_host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


def queries_for(client, url):
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/", "/domains/", "/hosts/kvm00/", "/api/domains/", "/api/hosts/"])
def test_queries_do_not_grow_with_rows(client, viewer, tmp_path, url):
    client.force_login(viewer)
    sync_host(Host.objects.create(name="kvm00", uri=write_host(tmp_path, "kvm00", count=2)))
    small = queries_for(client, url)

    for i in range(1, 6):
        sync_host(Host.objects.create(name=f"kvm{i:02d}", uri=write_host(tmp_path, f"kvm{i:02d}", count=40)))
    sync_host(
        Host.objects.get(name="kvm00"),
    )
    write_host(tmp_path, "kvm00", count=150)
    sync_host(Host.objects.get(name="kvm00"))
    large = queries_for(client, url)

    assert large == small, f"{url}: {small} queries with few rows, {large} with many"
