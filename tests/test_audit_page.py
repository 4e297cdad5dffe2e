"""The audit log page: newest first, filtered, paginated, exported as CSV."""

import csv
import io
from datetime import UTC, datetime

import pytest

from migrations_app.models import AuditEntry
from migrations_app.views import csv_safe

pytestmark = pytest.mark.django_db


def entry(action, message, at, username="oscar", domain="web1", source="kvm01", target="kvm02", outcome=""):
    e = AuditEntry(
        action=action,
        message=message,
        at=at,
        username=username,
        domain_name=domain,
        source_name=source,
        target_name=target,
        outcome=outcome,
    )
    e.save()
    return e


@pytest.fixture
def log():
    return [
        entry("request", "oscar asked for a live migration of web1.", datetime(2026, 3, 1, 9, tzinfo=UTC)),
        entry(
            "succeeded",
            "web1 is now on kvm02.",
            datetime(2026, 3, 1, 9, 5, tzinfo=UTC),
            username="",
            outcome="succeeded",
        ),
        entry(
            "check",
            "Pre-flight checks for db1: fail.",
            datetime(2026, 3, 2, 8, tzinfo=UTC),
            username="alice",
            domain="db1",
            source="kvm03",
            target="kvm01",
            outcome="fail",
        ),
        entry(
            "failed",
            '=HYPERLINK("http://evil.example","click")',
            datetime(2026, 3, 3, 8, tzinfo=UTC),
            username="@mallory",
            domain="-db2",
            source="kvm02",
            target="kvm03",
            outcome="failed",
        ),
    ]


def test_the_log_is_newest_first(client, viewer, log):
    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    positions = [page.index(e.at.strftime("%Y-%m-%d %H:%M:%S")) for e in reversed(log)]
    assert positions == sorted(positions)
    assert "4 entries, newest first" in page
    assert "system" in page  # the worker's entries have no user


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ("domain=web1", ["web1 is now on kvm02."], ["db1: fail"]),
        ("host=kvm03", ["db1: fail", "HYPERLINK"], ["web1 is now on kvm02."]),
        ("user=alice", ["db1: fail"], ["web1 is now on kvm02."]),
        ("action=request", ["asked for a live migration"], ["web1 is now on kvm02."]),
        ("outcome=fail", ["db1: fail"], ["HYPERLINK", "web1 is now"]),
        ("since=2026-03-02&until=2026-03-02", ["db1: fail"], ["web1 is now", "HYPERLINK"]),
    ],
)
def test_the_log_filters(client, viewer, log, query, shown, hidden):
    client.force_login(viewer)
    page = client.get("/audit/?" + query).content.decode()
    for text in shown:
        assert text in page, (query, text)
    for text in hidden:
        assert text not in page, (query, text)


def test_a_bad_date_is_explained(client, viewer, log):
    client.force_login(viewer)
    response = client.get("/audit/?since=yesterday")
    assert response.status_code == 400
    assert "&#x27;yesterday&#x27; is not a date (YYYY-MM-DD)" in response.content.decode()


def test_the_log_is_paginated(client, viewer):
    for i in range(120):
        entry("check", f"entry number {i:03d}", datetime(2026, 1, 1, 0, i % 60, i // 60, tzinfo=UTC))
    client.force_login(viewer)
    first = client.get("/audit/").content.decode()
    assert "Page 1 of 3" in first and "entry number 119" in first and "entry number 000" not in first
    last = client.get("/audit/?page=3").content.decode()
    assert "entry number 000" in last and "entry number 119" not in last


def test_messages_are_escaped(client, viewer):
    entry("failed", "<script>alert(1)</script>", datetime(2026, 1, 1, tzinfo=UTC))
    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def read_csv(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = response.content.decode()
    return list(csv.reader(io.StringIO(body)))


def test_the_csv_export_holds_the_filtered_log(client, viewer, log):
    client.force_login(viewer)
    table = read_csv(client.get("/audit/export.csv"))
    assert table[0] == ["at", "user", "action", "outcome", "domain", "source", "target", "migration", "message"]
    assert len(table) == 1 + len(log)
    assert table[1][0].startswith("2026-03-03T08:00:00")  # newest first
    table = read_csv(client.get("/audit/export.csv?domain=web1"))
    assert [row[8] for row in table[1:]] == ["web1 is now on kvm02.", "oscar asked for a live migration of web1."]
    assert table[1][1] == "system"


def test_the_csv_export_cannot_smuggle_formulas(client, viewer, log):
    client.force_login(viewer)
    table = read_csv(client.get("/audit/export.csv?outcome=failed"))
    row = dict(zip(table[0], table[1], strict=True))
    assert row["message"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["user"] == "'@mallory"
    assert row["domain"] == "'-db2"
    for cell in table[1]:
        assert not cell.startswith(("=", "+", "-", "@")), cell


@pytest.mark.parametrize(
    "value, safe",
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
def test_csv_cells_that_look_like_formulas_are_quoted(value, safe):
    assert csv_safe(value) == safe


def test_the_export_link_keeps_the_filters(client, viewer, log):
    client.force_login(viewer)
    page = client.get("/audit/?domain=web1&action=request").content.decode()
    assert 'href="/audit/export.csv?domain=web1&amp;action=request"' in page


def test_viewers_without_a_role_get_nothing(client, outsider, log):
    client.force_login(outsider)
    assert client.get("/audit/export.csv").status_code == 403
