"""``/health``: can the portal take work and get it analysed? For monitoring and load balancers.

Answers JSON with one entry per dependency, and 200 only when all are up:

    {"status": "ok", "checks": {"database": {"ok": true},
                                "broker": {"ok": true},
                                "workers": {"ok": true, "count": 1}}}

Anyone may call it (a load balancer has no account), so it says whether things
work and nothing about where they are; the details go to the log.
"""
import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from portal.celery import app as celery_app

logger = logging.getLogger(__name__)


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        logger.warning("Health: database unavailable", exc_info=True)
        return {"ok": False, "error": "database unavailable"}
    return {"ok": True}


def check_broker() -> dict:
    timeout = settings.HEALTH_CHECK_TIMEOUT
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception:
        logger.warning("Health: message broker unreachable", exc_info=True)
        return {"ok": False, "error": "message broker unreachable"}
    return {"ok": True}


def check_workers() -> dict:
    """Ask every Celery worker for a pong; a worker busy with a long task still answers,
    since remote control runs in the worker's main process, not in its pool."""
    try:
        replies = celery_app.control.ping(timeout=settings.HEALTH_CHECK_TIMEOUT) or []
    except Exception:
        logger.warning("Health: could not ping the workers", exc_info=True)
        return {"ok": False, "count": 0, "error": "could not ping the workers"}
    count = len(replies)
    if not count:
        return {"ok": False, "count": 0, "error": "no analysis worker answered"}
    return {"ok": True, "count": count}


@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Database, broker and worker availability; 200 when all are up, else 503."""
    checks = {"database": check_database(), "broker": check_broker()}
    if checks["broker"]["ok"]:
        checks["workers"] = check_workers()
    else:
        checks["workers"] = {"ok": False, "count": 0, "error": "message broker unreachable"}
    healthy = all(check["ok"] for check in checks.values())
    response = JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
    patch_cache_control(response, no_store=True)
    return response
