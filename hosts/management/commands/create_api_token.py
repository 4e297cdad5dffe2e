from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from knox.models import AuthToken


class Command(BaseCommand):
    help = (
        "Make a new API token for a user and print it (its last word). Only a digest "
        "of it is stored: it cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: object, username: str, **options: object) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"No such user: {username}.") from None
        instance, token = AuthToken.objects.create(user=user)
        self.stdout.write(
            f"New API token for {user.username}, valid until {instance.expiry:%Y-%m-%d %H:%M} UTC "
            f"(shown once, keep it private; list and revoke yours at /account/tokens/): {token}"
        )
