"""Housekeeping tasks of the analysis pipeline (the analysis itself is in mlcore/tasks.py).

They run on the default ``celery`` queue, which the portal's worker consumes next
to ``inference``; celery beat (started by ``manage.py runportal``) triggers the
sweep every ANALYSIS_SWEEP_SECONDS, and every worker triggers one when it starts.
"""
import logging

from celery import shared_task
from celery.signals import worker_ready

from diagnosis.services import do_requeue_pending_analyses

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def sweep_pending_analyses() -> int:
    """Hand to the broker again the analysis runs that never reached a worker.

    Covers uploads made while the broker was down and messages lost with a Redis
    that kept no data. Safe to run any time and more than once: the analysis
    tasks claim each row before working on it. Returns how many runs were queued.
    """
    return do_requeue_pending_analyses()


@worker_ready.connect
def _sweep_when_a_worker_starts(sender=None, **kwargs) -> None:
    """Queue one sweep when a worker comes up: it may have been down while work piled up."""
    try:
        sweep_pending_analyses.delay()
    except Exception:
        logger.exception("Could not queue the start-up sweep")
