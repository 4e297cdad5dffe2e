"""core.links: a row's link, reversed once and kept, stays right under any script prefix."""

from django.urls import reverse, set_script_prefix

from core.links import row_url


def test_a_kept_link_follows_the_script_prefix():
    try:
        set_script_prefix("/kvmweb/")
        assert row_url("host-detail", "kvm01") == "/kvmweb/hosts/kvm01/" == reverse("host-detail", args=["kvm01"])
        set_script_prefix("/")
        assert row_url("host-detail", "kvm01") == "/hosts/kvm01/"
    finally:
        set_script_prefix("/")


def test_a_kept_link_is_the_one_reverse_gives(settings):
    assert row_url("migration-detail", 7) == reverse("migration-detail", args=[7])
    settings.ROOT_URLCONF = "tests.urls_elsewhere"
    assert row_url("migration-detail", 7) == "/elsewhere/migrations/7/"
