from django.core.management.base import BaseCommand, CommandParser

from migrations_app.engine import reconcile_all


class Command(BaseCommand):
    help = (
        "Settle every migration left unfinished by a worker that stopped: ask both hosts where "
        "the VM is, finish or adopt the migration, and refresh the inventory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="do not wait for the worker's heartbeat to go stale (use when no worker runs)",
        )

    def handle(self, *args: object, force: bool, **options: object) -> None:
        results = reconcile_all(force=force)
        for pk, outcome in results:
            self.stdout.write(f"migration {pk}: {outcome}")
        if not results:
            self.stdout.write("Nothing to reconcile.")
