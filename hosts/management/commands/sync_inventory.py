from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts.models import Host
from hosts.sync import sync_hosts


class Command(BaseCommand):
    help = "Read the inventory of hosts (all, or those named) from libvirt now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("hosts", nargs="*", metavar="HOST", help="host names (default: all)")

    def handle(self, *args: object, hosts: list[str], **options: object) -> None:
        unknown = set(hosts) - set(Host.objects.filter(name__in=hosts).values_list("name", flat=True))
        if unknown:
            raise CommandError(
                f"No such host: {', '.join(sorted(unknown))}. Registered hosts: "
                f"{', '.join(Host.objects.values_list('name', flat=True)) or 'none'}."
            )
        failed = 0
        for result in sync_hosts(hosts or None):
            self.stdout.write(str(result))
            failed += not result.online
        if failed:
            raise CommandError(f"{failed} host(s) could not be read.")
