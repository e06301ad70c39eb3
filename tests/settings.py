"""Test settings: the real settings, made fast and isolated (grand-challenge / cookiecutter style)."""
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
