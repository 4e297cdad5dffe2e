from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from core.roles import has_role, is_operator


class IsOperatorOrReadOnly(BasePermission):
    """Any logged-in user may read; only operators may change anything."""

    message = "Only operators may do this. Ask an administrator to add you to the 'operators' group."

    def has_permission(self, request: Any, view: object) -> bool:
        if not (request.user and has_role(request.user)):
            return False
        return request.method in SAFE_METHODS or is_operator(request.user)


class HasRole(BasePermission):
    """Any operator or viewer: for actions that read the cluster but change nothing in it."""

    message = "Your account has no role in kvmweb yet. Ask an administrator for one."

    def has_permission(self, request: Any, view: object) -> bool:
        return bool(request.user and has_role(request.user))
