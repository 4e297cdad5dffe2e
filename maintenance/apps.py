from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "maintenance"
    verbose_name = "Maintenance and evacuation"

    def ready(self):
        from migrations_app.events import migration_published
        from migrations_app.jobs import migration_job_done

        from . import rolling, runner, services

        # An evacuation's next step runs when one of its moves' job is over,
        # and its page follows each move's progress.
        migration_job_done.connect(runner.on_migration_job_done, dispatch_uid="evacuation-step")
        migration_published.connect(services.on_migration_published, dispatch_uid="evacuation-progress")
        # A rolling maintenance's next step runs when its evacuation or return ends.
        services.evacuation_finished.connect(rolling.on_evacuation_finished, dispatch_uid="rolling-step")
