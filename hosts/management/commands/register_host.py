from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from hosts.models import Host
from hosts.sync import sync_host


class Command(BaseCommand):
    help = "Register a host (or update its URI) and read its inventory."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("uri")

    def handle(self, *args, name, uri, **options):
        host = Host.objects.filter(name=name).first() or Host(name=name)
        host.uri = uri.strip()
        try:
            host.full_clean()
        except ValidationError as e:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in e.message_dict.items()))
        host.save()
        self.stdout.write(str(sync_host(host)))
