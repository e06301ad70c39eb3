"""`manage.py ensure_admin`, the first-run step of bin/run."""
import io
import re

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User


def run(**options) -> str:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out, **options)
    return out.getvalue()


def test_it_creates_the_admin_from_settings(db, settings):
    settings.PORTAL_ADMIN_USERNAME = "chief"
    settings.PORTAL_ADMIN_PASSWORD = "configured passphrase 1"
    settings.PORTAL_ADMIN_EMAIL = "chief@clinic.example"

    output = run(interactive=False)

    chief = User.objects.get(username="chief")
    assert chief.is_superuser and chief.role == User.Role.ADMIN and chief.email == "chief@clinic.example"
    assert chief.check_password("configured passphrase 1")
    assert "configured passphrase 1" not in output


def test_without_a_password_it_generates_one_and_prints_it(db, settings):
    settings.PORTAL_ADMIN_PASSWORD = ""
    output = run(interactive=False)
    password = re.search(r"Generated password: (\S+)", output).group(1)
    assert User.objects.get(username="admin").check_password(password)


def test_it_does_nothing_when_an_admin_exists(db, settings, admin_user):
    settings.PORTAL_ADMIN_PASSWORD = "another passphrase 2"
    output = run(interactive=False)
    assert "Administrator account exists: ada" in output
    assert User.objects.filter(is_superuser=True).count() == 0


def test_it_refuses_to_take_over_an_ordinary_users_name(db, settings, alice):
    settings.PORTAL_ADMIN_USERNAME = "alice"
    with pytest.raises(CommandError, match="not an active administrator"):
        run(interactive=False)
