from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.template.loader import render_to_string

from core.roles import NO_ROLE_MESSAGE, has_role

# Paths a logged-in user without a role may still reach: to log out, to see
# why they are refused, and the admin site (which has its own staff check).
ALWAYS_ALLOWED = ("/accounts/", "/static/", "/admin/")


class RoleRequiredMiddleware:
    """Refuse logged-in users who are neither operators nor viewers.

    Anonymous users are left to LoginRequiredMiddleware (pages) and DRF's
    permission classes (API), which answer them with a login redirect or 401/403.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not request.path.startswith(ALWAYS_ALLOWED) and not has_role(user):
            if request.path.startswith("/api/"):
                return HttpResponseForbidden('{"detail": "%s"}' % NO_ROLE_MESSAGE, content_type="application/json")
            return HttpResponseForbidden(
                render_to_string("no_role.html", {"message": NO_ROLE_MESSAGE, "user": user}, request)
            )
        return self.get_response(request)
