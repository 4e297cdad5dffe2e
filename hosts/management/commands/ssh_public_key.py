from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts import sshkeys


class Command(BaseCommand):
    help = (
        "Print kvmweb's SSH public key (made on first use), the line that goes into "
        "~/.ssh/authorized_keys of the account kvmweb logs in as on each host."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--command", action="store_true", help="print the shell line that adds it to root's authorized_keys"
        )

    def handle(self, *args: object, command: bool = False, **options: object) -> None:
        try:
            self.stdout.write(sshkeys.authorized_keys_line() if command else sshkeys.public_key())
        except sshkeys.SSHKeyError as e:
            raise CommandError(f"{e.plain} {e.detail}".strip()) from None
