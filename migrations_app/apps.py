from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "migrations_app"
    verbose_name = "Migrations"

    def ready(self) -> None:
        # Connects the logout signal that closes a session's WebSockets, the
        # login limits' counters, and the revocation of tokens on a new password
        # (in every process: manage.py changepassword too).
        import kvmweb.logins  # noqa: F401
        import kvmweb.tokens  # noqa: F401
        import kvmweb.websocket  # noqa: F401

        from . import (
            inventory,  # noqa: F401  (connects the inventory signals' receivers)
            jobs,  # noqa: F401  (a migration's end wakes those waiting for its hosts)
        )
