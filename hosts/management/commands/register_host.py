from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts import sshkeys
from hosts.libvirt import InvalidURI, validate_uri
from hosts.models import Host
from hosts.sync import sync_host


class Command(BaseCommand):
    help = "Register a host (or update its URI) and read its inventory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("uri")
        parser.add_argument(
            "--fingerprint",
            default="",
            help="SHA256:... of the host's SSH host key: trust a key with this fingerprint without asking",
        )

    def handle(self, *args: object, name: str, uri: str, fingerprint: str = "", **options: object) -> None:
        try:
            uri = validate_uri(uri)
        except InvalidURI as e:
            raise CommandError(f"uri: {e}") from None
        host = Host.objects.filter(name=name).first() or Host(name=name)
        if host.pk:
            host.forget_host_key_if_moved(uri)
        host.uri = uri
        if fingerprint:
            if not host.uses_ssh:
                raise CommandError("--fingerprint pins an SSH host key: this URI is not SSH.")
            if not sshkeys.same_fingerprint(fingerprint, host.ssh_fingerprint):
                host.ssh_pinned_fingerprint = fingerprint.strip()
        try:
            host.full_clean()
        except ValidationError as e:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in e.message_dict.items()))
        host.save()
        self.stdout.write(str(sync_host(host)))
        host.refresh_from_db()
        state = host.host_key_state
        if state == "trusted":
            self.stdout.write(f"{host.name}: SSH host key {host.ssh_fingerprint} trusted")
        elif fingerprint and host.ssh_offered_key:
            raise CommandError(
                f"{host.name} offers the SSH host key {host.ssh_offered_fingerprint}, not {fingerprint}: "
                "not trusted. Check the key on the host."
            )
        elif state in ("unconfirmed", "changed"):
            self.stdout.write(
                f"{host.name}: SSH host key {host.ssh_offered_fingerprint or '(not fetched: the host did not answer)'}"
                f" is NOT trusted yet. Check it on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
                f"then confirm it on the host's page or run: manage.py register_host {host.name} {host.uri} "
                f"--fingerprint {host.ssh_offered_fingerprint or 'SHA256:...'}"
            )
