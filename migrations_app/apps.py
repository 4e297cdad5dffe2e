from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "migrations_app"
    verbose_name = "Migrations"

    def ready(self) -> None:
        # Signal receivers are connected when their module is imported, and these
        # import models: here, once the apps are loaded, not at the top.
        from . import (
            events,  # noqa: F401  (the lifecycle hook: audits and publishes each change of a migration)
            inventory,  # noqa: F401  (connects the inventory signals' receivers)
            jobs,  # noqa: F401  (a migration's end wakes those waiting for its hosts)
        )
