from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The live picture: the dashboard page (hosts' counts, running migrations,
    split-brain alarms) and the live part of each VM's page, with their sockets
    and what is published to them. It sits above ``hosts`` and
    ``migrations_app`` and hears their news through signals: neither imports it."""

    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from hosts.signals import inventory_changed
        from migrations_app.events import migration_published

        from . import publishing

        inventory_changed.connect(publishing.on_inventory_changed, dispatch_uid="dashboard-inventory")
        migration_published.connect(publishing.on_migration_published, dispatch_uid="dashboard-migration")
