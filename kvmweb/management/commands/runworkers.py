"""``manage.py runworkers``: the Procfile's worker line (see kvmweb/workerpool.py)."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from kvmweb.workerpool import Pool


class Command(BaseCommand):
    help = "Run kvmweb's pool of workers: migration slots and short-job slots, each restarted if it dies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="migrations that may run at once (default: KVMWEB_WORKERS, 4)",
        )
        parser.add_argument(
            "--short",
            type=int,
            default=None,
            help="processes for short jobs: syncs, reconcile, evacuation steps (default: KVMWEB_SHORT_WORKERS, 2)",
        )

    def handle(self, *args: object, **options: Any) -> None:
        workers = options["workers"] or settings.KVMWEB_WORKERS
        short = options["short"] or settings.KVMWEB_SHORT_WORKERS
        if workers < 1 or short < 1:
            self.stderr.write("runworkers: --workers and --short must be at least 1")
            raise SystemExit(2)
        level = {0: "WARNING", 1: "INFO"}.get(options["verbosity"], "DEBUG")
        # The slots are forked from this process: none may share its connection.
        connections.close_all()
        raise SystemExit(Pool(workers, short, logging_level=level).run())
