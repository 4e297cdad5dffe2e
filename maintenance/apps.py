from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "maintenance"
    verbose_name = "Maintenance and evacuation"

    def ready(self) -> None:
        # Here, not at the top: these modules import models, which Django loads
        # only once every app is registered.
        from migrations_app.checks import placement_check
        from migrations_app.events import migration_published
        from migrations_app.jobs import migration_job_done

        from . import events, rolling, rules, runner
        from .models import evacuation_changed

        # An evacuation's next step runs when one of its moves' job is over,
        # its page follows each move's progress (importing events connects the
        # evacuations' lifecycle hook), and a migration's pre-flight checks ask
        # whether it keeps the placement rules.
        migration_job_done.connect(runner.on_migration_job_done, dispatch_uid="evacuation-step")
        migration_published.connect(events.on_migration_published, dispatch_uid="evacuation-progress")
        placement_check.connect(rules.check_move, dispatch_uid="placement-rules-check")
        # A rolling maintenance's next step runs when its evacuation or return ends.
        evacuation_changed.connect(rolling.on_evacuation_finished, dispatch_uid="rolling-step")
