from django.http import HttpRequest

from core.roles import is_operator


def roles(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    return {"is_operator": bool(user and is_operator(user))}
