from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # Django connects a module's signal receivers when it is imported, and a
        # model's module cannot be imported before the apps are loaded: here,
        # not at the top. Connects the logout signal that closes a session's
        # WebSockets, the login limits' counters, and the revocation of tokens
        # on a new password (in every process: manage.py changepassword too).
        from . import logins, tokens, websocket  # noqa: F401
