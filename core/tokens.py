"""API tokens: they expire, their owner lists and revokes them, a new password revokes them.

Tokens lasted until deleted in the admin, survived a password change, and
their owner could not see them. Now each expires ``KVMWEB_TOKEN_TTL_DAYS``
after it is made (older tokens made without an expiry too, counted from when
they were made: core.auth), the owner lists and revokes theirs at
/account/tokens/ and /api/tokens/, and setting a new password revokes them all,
as it logs out every session.
"""

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from knox.models import AuthToken
from rest_framework import mixins, serializers, viewsets
from rest_framework.permissions import IsAuthenticated

from core.auth import expires


@receiver(pre_save, sender=get_user_model(), dispatch_uid="kvmweb-revoke-tokens-on-new-password")
def revoke_tokens_on_new_password(
    sender: type[Model], instance: Any, update_fields: frozenset[str] | None = None, **kwargs: Any
) -> None:
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        # In the save's own transaction: a token never outlives the new password.
        AuthToken.objects.filter(user_id=instance.pk).delete()


# -- the API ---------------------------------------------------------------------


class TokenSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="token_key", read_only=True, help_text="The token's first characters.")
    expires = serializers.SerializerMethodField()

    class Meta:
        model = AuthToken
        fields = ["id", "created", "expires"]

    def get_expires(self, token: AuthToken) -> str:
        return serializers.DateTimeField().to_representation(expires(token))


class TokenViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The requesting user's API tokens: list them, revoke one (DELETE)."""

    serializer_class = TokenSerializer
    permission_classes = [IsAuthenticated]
    lookup_field = "token_key"
    lookup_url_kwarg = "id"
    pagination_class = None

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # the API schema, made without a user
            return AuthToken.objects.none()
        return AuthToken.objects.filter(user=self.request.user).order_by("-created")


# -- the page --------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    tokens = AuthToken.objects.filter(user=request.user).order_by("-created")
    if request.method == "POST":
        key = request.POST.get("token", "")
        deleted, _ = tokens.filter(token_key=key).delete()
        if deleted:
            messages.success(request, f"Token {key}… revoked: it no longer works.")
        else:
            messages.error(request, "No such token of yours: it may have been revoked already.")
        return redirect("account-tokens")
    rows = [{"key": t.token_key, "created": t.created, "expires": expires(t)} for t in tokens]
    return render(request, "account/tokens.html", {"tokens": rows})
