"""Test settings: the real settings, made fast and isolated (grand-challenge / cookiecutter style)."""
import os
import tempfile
from pathlib import Path

from portal.settings import *  # noqa: F403

# Uploads go to a throwaway folder; conftest points each test at its own one.
MEDIA_ROOT = Path(tempfile.gettempdir()) / "neuroscan-test-media"

# Argon2 is deliberately slow; tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# No collectstatic in tests: serve from the source folders.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True

# A file, not SQLite's in-memory database: the integration tests run a real Celery
# worker in another process, which must see the same test database. The process id
# keeps two test runs on one machine apart.
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": str(Path(tempfile.gettempdir()) / f"neuroscan-test-{os.getpid()}.sqlite3")
}

# Fast tests run the analysis tasks in-process: tasks run when queued (inside
# django_capture_on_commit_callbacks), against a stub predictor with fixed answers
# and no TensorFlow. The pipeline integration tests switch both off and run a
# real Redis, a real worker and the shipped model.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
MLCORE_PREDICTOR = "tests.resources.stub_predictor.get_stub_predictor"
# No broker exists in fast tests; a publish that is not eager must fail at once.
CELERY_BROKER_URL = "redis+socket:///nonexistent/neuroscan-test-broker.sock"
