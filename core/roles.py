"""The two roles: operators change things, viewers look."""

OPERATORS = "operators"
VIEWERS = "viewers"


def is_operator(user):
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: templates and permission checks ask often.
    if not hasattr(user, "_kvmweb_is_operator"):
        user._kvmweb_is_operator = user.groups.filter(name=OPERATORS).exists()
    return user._kvmweb_is_operator


def has_role(user):
    """Logged in and given a role: a bare account sees nothing until an admin assigns one."""
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    if not hasattr(user, "_kvmweb_has_role"):
        names = set(user.groups.values_list("name", flat=True))
        user._kvmweb_is_operator = OPERATORS in names
        user._kvmweb_has_role = bool(names & {OPERATORS, VIEWERS})
    return user._kvmweb_has_role


NO_ROLE_MESSAGE = (
    "Your account has no role in kvmweb yet. Ask an administrator to add you to the "
    "'viewers' group (to look) or the 'operators' group (to migrate)."
)
