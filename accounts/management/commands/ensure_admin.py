"""Create the first administrator if the portal has none (used by bin/run)."""
import getpass
import secrets
import sys

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from accounts.models import User


class Command(BaseCommand):
    help = (
        "Create the first administrator unless one exists. Reads PORTAL_ADMIN_USERNAME, "
        "PORTAL_ADMIN_PASSWORD and PORTAL_ADMIN_EMAIL; without a password it prompts on a "
        "terminal, or else generates one and prints it once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Never prompt; generate a password when none is configured.",
        )

    def handle(self, *args, interactive: bool = True, **options) -> None:
        existing = (
            User.objects.filter(Q(role=User.Role.ADMIN) | Q(is_superuser=True), is_active=True)
            .order_by("date_joined")
            .first()
        )
        if existing:
            self.stdout.write(f"Administrator account exists: {existing.username}")
            return

        username = settings.PORTAL_ADMIN_USERNAME
        if User.objects.filter(username=username).exists():
            raise CommandError(
                f"A user named {username!r} exists but is not an active administrator. "
                "Set PORTAL_ADMIN_USERNAME to another name."
            )
        password = settings.PORTAL_ADMIN_PASSWORD
        generated = False
        if not password:
            if interactive and sys.stdin.isatty():
                password = self._prompt_password(username)
            else:
                password = secrets.token_urlsafe(12)
                generated = True

        User.objects.create_superuser(
            username=username, email=settings.PORTAL_ADMIN_EMAIL, password=password
        )
        self.stdout.write(self.style.SUCCESS(f"Created administrator {username!r}."))
        if generated:
            # Printed once and never stored: the hash is all the database keeps.
            self.stdout.write(
                self.style.WARNING(
                    f"  Generated password: {password}\n"
                    "  Write it down now; change it after signing in (menu → Change password)."
                )
            )

    def _prompt_password(self, username: str) -> str:
        self.stdout.write(f"Choose a password for the first administrator, {username!r}.")
        while True:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                self.stderr.write("The passwords do not match; try again.")
                continue
            try:
                validate_password(password, User(username=username))
            except ValidationError as exc:
                self.stderr.write(" ".join(exc.messages))
                continue
            return password
