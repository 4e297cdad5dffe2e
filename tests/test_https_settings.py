"""HTTPS switches, Content-Security-Policy, static files (finding 9)."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hosts.models import Host
from migrations_app.models import Migration

ROOT = Path(__file__).resolve().parent.parent


def check_deploy(**env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    base["DJANGO_SECRET_KEY"] = "a-long-random-secret-only-for-this-check-" + "x7Qp2" * 8
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )


@pytest.mark.processes
def test_check_deploy_is_clean_with_django_secure():
    done = check_deploy(DJANGO_SECURE="true")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.processes
def test_without_django_secure_check_deploy_names_what_is_missing():
    done = check_deploy()
    assert done.returncode != 0
    for warning in ("security.W004", "security.W012", "security.W016"):
        assert warning in done.stdout + done.stderr


@pytest.mark.processes
def test_django_secure_sets_cookies_hsts_and_the_proxy_header():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, s.SECURE_PROXY_SSL_HEADER)"
    )
    env = {**os.environ, "DJANGO_SECURE": "true", "DJANGO_SETTINGS_MODULE": "kvmweb.settings"}
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["True", "True", "True", "('HTTP_X_FORWARDED_PROTO',", "'https')"], out.stderr


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


@pytest.mark.parametrize(
    "path", ["/", "/domains/", "/migrations/", "/migrations/{m}/", "/migrations/new/", "/audit/", "/hosts/kvm01/"]
)
def test_every_page_has_a_self_only_policy_and_nothing_inline(client, operator, path):
    Host.objects.create(name="kvm01", uri="test:///default", memory_total=100, memory_free=40)
    m = Migration.objects.create(
        domain_name="web01", domain_uuid=uuid.uuid4(), source_name="kvm01", target_name="kvm02", mode="live"
    )
    client.force_login(operator)
    response = client.get(path.format(m=m.pk))
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html).group(0)
    assert "style=" not in html and "<style" not in html
    assert not INLINE_HANDLER.search(html.split("<body", 1)[1])


def test_the_login_page_has_the_policy_too(client):
    response = client.get("/accounts/login/")
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_static_files_are_served_with_cache_headers(client):
    response = client.get("/static/kvmweb.css")
    assert response.status_code == 200
    assert "max-age" in response["Cache-Control"]
