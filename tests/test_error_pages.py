"""Refusals and errors are pages of the site, with its header and a one-line reason."""

import pytest
from django.template.loader import render_to_string

pytestmark = pytest.mark.django_db


def test_a_403_names_the_reason_inside_the_site_s_page(client, viewer):
    client.force_login(viewer)
    response = client.get("/migrations/new/")
    page = response.content.decode()
    assert response.status_code == 403
    assert '<header class="top">' in page and 'href="/hosts/"' in page
    assert "Only operators may migrate." in page


def test_a_404_says_what_was_not_found(client, viewer):
    client.force_login(viewer)
    page = client.get("/domains/not-a-uuid/").content.decode()
    assert '<header class="top">' in page and "Nothing is at <code>/domains/not-a-uuid/</code>" in page
    page = client.get("/hosts/kvm99/").content.decode()
    assert "No Host matches the given query." in page


def test_the_api_keeps_answering_json_for_an_unknown_address(client, viewer):
    client.force_login(viewer)
    assert client.get("/api/nothing-here/").json() == {"detail": "Not found."}


def test_the_500_page_renders_without_a_request_or_the_database():
    page = render_to_string("500.html")
    assert "Server error" in page and 'href="/hosts/"' in page and "kvmweb.css" in page


def test_a_form_without_its_csrf_token_gets_a_page_that_says_what_to_do(viewer):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    response = client.post("/hosts/", {"name": "kvm02", "uri": "test:///default"})
    assert response.status_code == 403
    page = response.content.decode()
    assert '<header class="top">' in page and "reload the page and send it again" in page


def test_the_favicon_is_there_for_anyone(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    assert client.get(response["Location"]).status_code == 200
