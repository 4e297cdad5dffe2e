"""API tokens expire, their owner lists and revokes them, a new password revokes them (issue 21, finding 10).

Tokens never expired, outlived a password change and could be revoked only
in the admin.
"""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from knox.models import AuthToken

pytestmark = pytest.mark.django_db


def new_token(user):
    out = StringIO()
    call_command("create_api_token", user.username, stdout=out)
    return out.getvalue().split()[-1], out.getvalue()


def get(client, token, url="/api/hosts/"):
    return client.get(url, HTTP_AUTHORIZATION=f"Token {token}")


def test_a_new_token_expires_after_the_configured_days(client, viewer, settings):
    token, said = new_token(viewer)
    instance = AuthToken.objects.get(user=viewer)
    assert instance.expiry is not None
    days = (instance.expiry - timezone.now()) / timedelta(days=1)
    assert settings.KVMWEB_TOKEN_TTL_DAYS - 1 < days <= settings.KVMWEB_TOKEN_TTL_DAYS == 90
    assert "valid until" in said
    assert get(client, token).status_code == 200
    AuthToken.objects.filter(pk=instance.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert get(client, token).status_code == 401
    assert not AuthToken.objects.filter(pk=instance.pk).exists()


def test_a_token_made_before_tokens_expired_expires_by_its_age(client, viewer, settings):
    instance, token = AuthToken.objects.create(user=viewer, expiry=None)
    assert get(client, token).status_code == 200
    AuthToken.objects.filter(pk=instance.pk).update(
        created=timezone.now() - timedelta(days=settings.KVMWEB_TOKEN_TTL_DAYS, seconds=1)
    )
    response = get(client, token)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


@pytest.mark.parametrize("how", ["set_password", "password change form"])
def test_a_new_password_revokes_every_token_of_the_user(client, viewer, operator, how):
    mine, _ = new_token(viewer)
    theirs, _ = new_token(operator)
    if how == "set_password":
        viewer.set_password("another long password 1")
        viewer.save()
    else:  # Django's password change form, as the admin's page uses it
        from django.contrib.auth.forms import PasswordChangeForm

        new = "another long password 1"
        form = PasswordChangeForm(viewer, {"old_password": "pw-vera", "new_password1": new, "new_password2": new})
        assert form.is_valid(), form.errors
        form.save()
    assert get(client, mine).status_code == 401
    assert get(client, theirs).status_code == 200
    # Saving the user otherwise (a login stamps last_login) revokes nothing.
    token, _ = new_token(viewer)
    viewer.first_name = "Vera"
    viewer.save()
    assert get(client, token).status_code == 200


def test_the_owner_lists_and_revokes_their_tokens_in_the_api(client, viewer, operator):
    first, _ = new_token(viewer)
    second, _ = new_token(viewer)
    theirs, _ = new_token(operator)
    listed = get(client, first, "/api/tokens/").json()
    assert sorted(t["id"] for t in listed) == sorted([first[:15], second[:15]])
    assert all(t["expires"] for t in listed)
    # Another user's token is not theirs to see or revoke.
    assert client.delete(f"/api/tokens/{theirs[:15]}/", HTTP_AUTHORIZATION=f"Token {first}").status_code == 404
    response = client.delete(f"/api/tokens/{second[:15]}/", HTTP_AUTHORIZATION=f"Token {first}")
    assert response.status_code == 204
    assert get(client, second).status_code == 401
    assert get(client, first).status_code == 200
    assert get(client, theirs).status_code == 200


def test_the_owner_lists_and_revokes_their_tokens_in_the_pages(client, viewer, operator):
    mine, _ = new_token(viewer)
    theirs, _ = new_token(operator)
    client.force_login(viewer)
    page = client.get("/account/tokens/").content.decode()
    assert mine[:15] in page and theirs[:15] not in page
    response = client.post("/account/tokens/", {"token": theirs[:15]}, follow=True)
    assert "No such token of yours" in response.content.decode()
    assert get(client, theirs).status_code == 200
    response = client.post("/account/tokens/", {"token": mine[:15]}, follow=True)
    assert "revoked" in response.content.decode()
    assert get(client, mine).status_code == 401
