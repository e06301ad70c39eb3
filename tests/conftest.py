"""Shared fixtures.

alice is a technician who opened ``case``; bob is the radiologist assigned to it;
charlie is a radiologist it is not assigned to, and dave a technician who did
not open it: neither can see it. ``admin_user`` is an administrator by role (not
a superuser), so tests exercise the role's real permissions.
"""
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client

from accounts.models import User
from diagnosis.models import Case, Patient
from diagnosis.services import do_create_case
from tests.factories import make_patient, make_scan, make_user, run_analysis


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def alice(db) -> User:
    return make_user("alice", role=User.Role.TECHNICIAN, first_name="Alice", last_name="Tanaka")


@pytest.fixture
def bob(db) -> User:
    return make_user("bob", role=User.Role.RADIOLOGIST, first_name="Bob", last_name="Rossi")


@pytest.fixture
def charlie(db) -> User:
    return make_user("charlie", role=User.Role.RADIOLOGIST)


@pytest.fixture
def dave(db) -> User:
    return make_user("dave", role=User.Role.TECHNICIAN)


@pytest.fixture
def admin_user(db) -> User:
    # Overrides pytest-django's superuser fixture (and so its admin_client).
    return make_user("ada", role=User.Role.ADMIN)


@pytest.fixture
def patient(db, alice) -> Patient:
    return make_patient(created_by=alice)


@pytest.fixture
def case(patient, alice, bob) -> Case:
    """A draft case opened through the service, so its history starts as in real use."""
    return do_create_case(
        patient=patient, user=alice, clinical_question="Headaches; rule out a mass.",
        assigned_radiologist=bob,
    )


@pytest.fixture
def reviewable_case(case, alice) -> Case:
    """``case`` with one scan uploaded and analysed (stub predictor), so it awaits review."""
    make_scan(case, uploaded_by=alice)
    return run_analysis(case)


@pytest.fixture
def client_for(db) -> Callable[[User | None], Client]:
    """A test client signed in as the given user (anonymous for None)."""

    def build(user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return build



@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the test database's WAL files: Django deletes the file-based test
    database (tests.settings) but not the -wal and -shm files SQLite keeps next to it."""
    from django.conf import settings

    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if name:
        for suffix in ("-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
