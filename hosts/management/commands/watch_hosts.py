import signal

from django.core.management.base import BaseCommand, CommandParser

from hosts.watch import Watcher


class Command(BaseCommand):
    help = (
        "Keep a connection to every host and store libvirt's domain events as they happen "
        "(a VM started, stopped, defined or migrated outside kvmweb); runs until stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rescan", type=float, default=10.0, help="seconds between looks for new hosts")
        parser.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between reconnects")

    def handle(self, *args: object, rescan: float, max_backoff: float, **options: object) -> None:
        watcher = Watcher(rescan=rescan, max_backoff=max_backoff)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: watcher.stop())
        self.stdout.write("Watching the hosts' libvirt events; stop with SIGTERM.")
        self.stdout.flush()
        watcher.run()
