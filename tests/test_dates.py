"""One date format on every page, in the user's zone with the zone shown; ISO in the API and the CSV."""

import datetime as dt

import pytest

from migrations_app.models import AuditAction, AuditEntry

pytestmark = pytest.mark.django_db

AT = dt.datetime(2026, 12, 5, 22, 55, 24, tzinfo=dt.UTC)


@pytest.fixture
def entry(db):
    return AuditEntry.objects.create(at=AT, action=AuditAction.REQUEST, message="Requested a move")


def test_pages_show_dates_in_the_zone_the_browser_names_with_the_zone(client, viewer, entry):
    client.force_login(viewer)
    assert "2026-12-05 22:55:24 UTC" in client.get("/audit/").content.decode()
    client.cookies["kvmweb_tz"] = "Europe/Berlin"
    page = client.get("/audit/").content.decode()
    assert "2026-12-05 23:55:24 CET" in page
    assert 'datetime="2026-12-05T22:55:24+00:00"' in page


def test_a_zone_that_is_not_one_is_ignored(client, viewer, entry):
    client.force_login(viewer)
    client.cookies["kvmweb_tz"] = "../../etc/passwd"
    assert "2026-12-05 22:55:24 UTC" in client.get("/audit/").content.decode()


def test_the_api_and_the_csv_keep_iso_utc_whatever_the_cookie(client, viewer, entry):
    client.force_login(viewer)
    client.cookies["kvmweb_tz"] = "Europe/Berlin"
    [row] = client.get("/api/audit/").json()["results"]
    assert row["at"] == "2026-12-05T22:55:24Z"
    csv = client.get("/audit/export.csv").content.decode()
    assert "2026-12-05T22:55:24+00:00" in csv
