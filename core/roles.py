"""The two roles: operators change things, viewers look."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin

OPERATORS = "operators"
VIEWERS = "viewers"

# What request.user is: a user (kvmweb's is django.contrib.auth's User), or nobody logged in.
AnyUser = AbstractBaseUser | AnonymousUser


def is_operator(user: AnyUser) -> bool:
    if not user.is_authenticated or not isinstance(user, PermissionsMixin):
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: templates and permission checks ask often.
    if not hasattr(user, "_kvmweb_is_operator"):
        user._kvmweb_is_operator = user.groups.filter(name=OPERATORS).exists()  # type: ignore[attr-defined]
    return bool(user._kvmweb_is_operator)  # type: ignore[attr-defined]


def has_role(user: AnyUser) -> bool:
    """Logged in and given a role: a bare account sees nothing until an admin assigns one."""
    if not user.is_authenticated or not isinstance(user, PermissionsMixin):
        return False
    if user.is_superuser:
        return True
    if not hasattr(user, "_kvmweb_has_role"):
        names = set(user.groups.values_list("name", flat=True))
        user._kvmweb_is_operator = OPERATORS in names  # type: ignore[attr-defined]
        user._kvmweb_has_role = bool(names & {OPERATORS, VIEWERS})  # type: ignore[attr-defined]
    return bool(user._kvmweb_has_role)  # type: ignore[attr-defined]


NO_ROLE_MESSAGE = (
    "Your account has no role in kvmweb yet. Ask an administrator to add you to the "
    "'viewers' group (to look) or the 'operators' group (to migrate)."
)
