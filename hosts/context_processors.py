from core.roles import is_operator


def roles(request):
    user = getattr(request, "user", None)
    return {"is_operator": bool(user and is_operator(user))}
