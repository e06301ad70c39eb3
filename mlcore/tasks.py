"""Celery tasks of the automatic analysis: the boundary between Django and the pure mlcore code.

An upload (or a re-run) creates an ``AnalysisRun`` with a PENDING ``Prediction``
per scan and stage and, after its transaction commits, publishes
``analyse_presence(run_pk=...)``. That task runs stage 1 over the whole run in
batches, then publishes ``analyse_type`` for the same run (an explicit next step
rather than a Celery chain, which STYLE.md asks us to avoid). One task per upload
means one model load per worker process and ``ceil(n / ANALYSIS_BATCH_SIZE)``
forward passes, however many slices arrive together.

Both stages are heads of one network, so stage 1's forward pass already holds
stage 2's answer. It is kept in a small per-process cache keyed by the scan's
and the weights' SHA-256; stage 2 on the same worker uses it and records that it
did (``shared_forward_pass``), and recomputes it anywhere else.

Reliability (grand-challenge ``components/tasks.py``, healthchecks ``sendalerts``):
- every task is ``acks_late`` with ``reject_on_worker_lost``: a message whose
  worker dies is delivered again;
- rows are claimed with conditional updates and written STARTED -> SUCCESS once,
  so a redelivered or duplicated task never adds a second result;
- prediction runs outside any transaction; each batch's results are written in
  one short transaction;
- failures are mapped: an undecodable scan fails alone with a clear message and
  no retry; a missing or altered model fails the run; the soft time limit
  records "Time limit exceeded"; anything else records "An unexpected error
  occurred", logs the traceback and re-raises. Only named transient errors
  (SQLite "database is locked") are retried, with capped backoff.

Web code never imports this module at import time, and this module imports no
TensorFlow at import time: the predictor is built inside the worker.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings
from django.db import OperationalError
from django.utils.module_loading import import_string

from diagnosis import services
from diagnosis.models import AnalysisRun, Prediction, Scan
from diagnosis.services import ModelIdentity, StageOutcome
from mlcore.constants import CLASS_NAMES, PRESENCE_LABELS
from mlcore.preprocessing import UnreadableImageError, prepare_image

logger = logging.getLogger(__name__)

MAX_RETRIES = 5
RETRY_BACKOFF_CAP_S = 60
# Stage-2 probabilities kept from stage-1 forward passes; 4 floats each.
FORWARD_CACHE_SIZE = 10_000

MODEL_UNAVAILABLE = "The analysis model could not be loaded: {reason}"
UNREADABLE = "The image could not be read ({reason})."
MISSING_FILE = "The image file is missing from storage."
STAGE_ONE_FAILED = "Not analysed: stage 1 could not analyse this scan."
TIME_LIMIT = "Time limit exceeded."
UNEXPECTED = "An unexpected error occurred."


def inference_task(func):
    """The one decorator for analysis tasks (grand-challenge's ``AcksLateTaskDecorator``).

    Late acknowledgement with redelivery when the worker dies, no result backend
    (results are Prediction rows) and a bound task for retries. The ``inference``
    queue (workers there run ``-c 1 --prefetch-multiplier 1``) comes from
    ``CELERY_TASK_ROUTES`` ("mlcore.tasks.*"): Celery 5.7 deprecates a ``queue``
    task attribute and 6.0 will ignore it.
    """
    return shared_task(
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=MAX_RETRIES,
    )(func)


class ModelUnavailable(Exception):
    """The predictor cannot be built (no model, or weights that fail verification)."""


def load_predictor():
    """The process-wide predictor for ``MLCORE_MODEL_DIR``, loaded on first use.

    ``MLCORE_PREDICTOR`` names the factory (``mlcore.inference.get_predictor``,
    which verifies the weights' SHA-256 and caches the model per process).
    """
    from mlcore.inference import ModelIntegrityError

    factory = import_string(settings.MLCORE_PREDICTOR)
    try:
        return factory(settings.MLCORE_MODEL_DIR)
    except ModelIntegrityError as exc:
        raise ModelUnavailable(str(exc)) from exc


def _identity(predictor) -> ModelIdentity:
    info = predictor.info
    return ModelIdentity(name=info.name, version=info.version, sha256=info.sha256)


@worker_process_init.connect
def _load_model_early(**kwargs) -> None:
    """Load the model when a worker process starts, so the first scan does not wait.

    Runs in the pool's child process (TensorFlow must not be loaded before a fork).
    A failure is only logged here; the tasks record it on the rows they claim.
    """
    try:
        load_predictor()
    except Exception:
        logger.exception("Could not load the analysis model at worker start")


# ---------------------------------------------------------------------------
# The forward-pass cache shared by the two stages within one worker process
# ---------------------------------------------------------------------------
_forward_cache: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
_forward_cache_lock = threading.Lock()


def _remember(scan_sha256: str, model_sha256: str, class_probs: Sequence[float]) -> None:
    with _forward_cache_lock:
        _forward_cache[(scan_sha256, model_sha256)] = [float(p) for p in class_probs]
        while len(_forward_cache) > FORWARD_CACHE_SIZE:
            _forward_cache.popitem(last=False)


def _recall(scan_sha256: str, model_sha256: str) -> list[float] | None:
    with _forward_cache_lock:
        return _forward_cache.pop((scan_sha256, model_sha256), None)


def clear_forward_cache() -> None:
    """Forget every kept stage-2 answer (tests use it to force a recomputation)."""
    with _forward_cache_lock:
        _forward_cache.clear()


# ---------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------
@inference_task
def analyse_presence(self, *, run_pk: str) -> None:
    """Stage 1: is a tumour present? For every scan of run ``run_pk``, in batches.

    Requires the run's PRESENCE rows to be PENDING (or STARTED by this same task,
    after a redelivery, or STARTED longer ago than the hard time limit). Leaves
    each SUCCESS with label and probabilities, or FAILURE with a message; an
    undecodable scan's TYPE row fails with it. Then publishes ``analyse_type`` for
    the run. A missing or altered model leaves every outstanding row of the run
    FAILURE. The case moves QUEUED -> PROCESSING on the first claim.
    """
    _run_stage(self, run_pk=run_pk, stage=Prediction.Stage.PRESENCE)


@inference_task
def analyse_type(self, *, run_pk: str) -> None:
    """Stage 2: which tumour type? For every scan of run ``run_pk`` that stage 1 analysed.

    Requires the run's TYPE rows to be PENDING (or claimable as for stage 1).
    Leaves each SUCCESS, or FAILURE ("stage 1 could not analyse this scan" when
    its PRESENCE row failed). When nothing of the run is outstanding any more the
    run is closed and the case moves to AWAITING_REVIEW, or FAILED with the reason
    when no scan could be analysed.
    """
    _run_stage(self, run_pk=run_pk, stage=Prediction.Stage.TYPE)


def _retry_countdown(retries: int) -> float:
    """2, 4, 8 ... seconds, capped, with jitter so retried workers do not collide again."""
    return min(RETRY_BACKOFF_CAP_S, 2 ** (retries + 1)) * random.uniform(0.5, 1.0)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "locked" in str(exc).lower()


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_stage(task, *, run_pk: str, stage: str) -> None:
    # A message redelivered after its worker died keeps its id, so the id is what
    # lets this run resume the rows it had claimed. Called directly (tests,
    # shell), there is no id: make one up.
    task_id = task.request.id or f"direct-{uuid.uuid4()}"
    worker = task.request.hostname or socket.gethostname()
    run = AnalysisRun.objects.filter(pk=run_pk).first()
    if run is None:
        logger.warning("Analysis run %s no longer exists; nothing to do", run_pk)
        return
    try:
        try:
            predictor = load_predictor()
        except ModelUnavailable as exc:
            logger.error("Analysis run %s: model unavailable: %s", run_pk, exc)
            _fail_outstanding(run, MODEL_UNAVAILABLE.format(reason=exc), task_id)
            services.do_finish_analysis_run(run=run)
            return
        model = _identity(predictor)
        pks = services.claimable_prediction_pks(run_pk=run_pk, stage=stage, task_id=task_id)
        for chunk in _chunks(pks, max(1, settings.ANALYSIS_BATCH_SIZE)):
            claimed = services.claim_predictions(prediction_pks=chunk, task_id=task_id, worker=worker)
            if not claimed:
                continue
            services.do_start_analysis_run(run=run, worker=worker, model=model)
            if stage == Prediction.Stage.PRESENCE:
                _presence_batch(predictor, model, claimed, task_id)
            else:
                _type_batch(predictor, model, claimed, task_id)
    except SoftTimeLimitExceeded:
        logger.error("Analysis run %s: %s time limit exceeded", run_pk, stage)
        pending = services.claimable_prediction_pks(run_pk=run_pk, stage=stage, task_id=task_id)
        services.do_fail_predictions(prediction_pks=pending, message=TIME_LIMIT, task_id=task_id)
    except Exception as exc:
        if _is_transient(exc):
            # Rows claimed so far stay STARTED under this task id; the retry (same id)
            # picks them up again. After MAX_RETRIES, celery raises and the sweep
            # recovers the rows once they are stale.
            logger.warning("Analysis run %s: transient error, retrying: %s", run_pk, exc)
            raise task.retry(exc=exc, countdown=_retry_countdown(task.request.retries))
        logger.exception("Analysis run %s: unexpected error in %s", run_pk, stage)
        # Every row this stage still owes fails, not only the batch at hand: left
        # PENDING, they would be swept up and hit the same error again and again.
        pending = services.claimable_prediction_pks(run_pk=run_pk, stage=stage, task_id=task_id)
        services.do_fail_predictions(prediction_pks=pending, message=UNEXPECTED, task_id=task_id)
        services.do_finish_analysis_run(run=run)
        raise
    if stage == Prediction.Stage.PRESENCE and run.predictions.filter(
        stage=Prediction.Stage.TYPE, status__in=Prediction.OUTSTANDING
    ).exists():
        # If the broker went away meanwhile, the TYPE rows stay PENDING with no
        # enqueued_at, and the next sweep publishes them.
        services.enqueue_analysis(run_pk=run_pk, stage=Prediction.Stage.TYPE)
    services.do_finish_analysis_run(run=run)


def _fail_outstanding(run: AnalysisRun, message: str, task_id: str) -> None:
    pks = list(run.predictions.outstanding().values_list("pk", flat=True))
    services.do_fail_predictions(prediction_pks=pks, message=message, task_id=task_id)


def _prepare(scans: Sequence[Scan], size: int) -> tuple[list[np.ndarray | None], dict[int, str]]:
    """Decode each scan's stored image; an undecodable one gets a message instead."""
    arrays: list[np.ndarray | None] = []
    errors: dict[int, str] = {}
    for index, scan in enumerate(scans):
        try:
            with scan.image.open("rb") as handle:
                arrays.append(prepare_image(handle, size))
        except FileNotFoundError:
            arrays.append(None)
            errors[index] = MISSING_FILE
        except UnreadableImageError as exc:
            arrays.append(None)
            errors[index] = UNREADABLE.format(reason=exc)
    return arrays, errors


def _forward(predictor, arrays: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass over the decodable images; rows of the others are left as zeros."""
    good = [index for index, array in enumerate(arrays) if array is not None]
    presence = np.zeros((len(arrays), len(PRESENCE_LABELS)))
    classes = np.zeros((len(arrays), len(CLASS_NAMES)))
    if good:
        batch = np.stack([arrays[index] for index in good])
        presence[good], classes[good] = predictor.predict_arrays(batch)
    return presence, classes


def _stage_outcome(row: Prediction, labels: Sequence[str], probs, seconds: float, shared: bool = False):
    probabilities = {label: round(float(p), 6) for label, p in zip(labels, probs)}
    return StageOutcome(
        prediction_pk=row.pk,
        label=labels[int(np.argmax(probs))],
        probabilities=probabilities,
        seconds=round(seconds, 4),
        shared_forward_pass=shared,
    )


def _presence_batch(predictor, model: ModelIdentity, rows: list[Prediction], task_id: str) -> None:
    began = time.perf_counter()
    arrays, errors = _prepare([row.scan for row in rows], predictor.image_size)
    presence, classes = _forward(predictor, arrays)  # outside any transaction
    analysed = len(rows) - len(errors)
    share = (time.perf_counter() - began) / max(1, analysed)
    outcomes = []
    for index, row in enumerate(rows):
        if index in errors:
            continue
        outcomes.append(_stage_outcome(row, PRESENCE_LABELS, presence[index], share))
        _remember(row.scan.sha256, model.sha256, classes[index])
    services.do_record_predictions(outcomes=outcomes, task_id=task_id, model=model)
    for index, message in errors.items():
        # The scan cannot be analysed at all: its stage-2 row fails with it, and the
        # rest of the case goes on. Retrying would not make the file readable.
        scan = rows[index].scan
        siblings = Prediction.objects.filter(run_id=rows[index].run_id, scan=scan).values_list("pk", flat=True)
        logger.warning("Scan %s cannot be analysed: %s", scan.pk, message)
        services.do_fail_predictions(prediction_pks=list(siblings), message=message, task_id=task_id, model=model)


def _type_batch(predictor, model: ModelIdentity, rows: list[Prediction], task_id: str) -> None:
    stage_one = dict(
        Prediction.objects.filter(
            run_id=rows[0].run_id, scan_id__in=[row.scan_id for row in rows], stage=Prediction.Stage.PRESENCE
        ).values_list("scan_id", "status")
    )
    skipped = [row for row in rows if stage_one.get(row.scan_id) != Prediction.Status.SUCCESS]
    if skipped:
        services.do_fail_predictions(
            prediction_pks=[row.pk for row in skipped], message=STAGE_ONE_FAILED, task_id=task_id
        )
    outcomes = []
    todo = []
    for row in rows:
        if row in skipped:
            continue
        began = time.perf_counter()
        kept = _recall(row.scan.sha256, model.sha256)
        if kept is None:
            todo.append(row)
        else:
            outcomes.append(_stage_outcome(row, CLASS_NAMES, kept, time.perf_counter() - began, shared=True))
    if todo:
        # Stage 1 ran on another worker (or this one restarted): run the network again.
        began = time.perf_counter()
        arrays, errors = _prepare([row.scan for row in todo], predictor.image_size)
        _, classes = _forward(predictor, arrays)
        share = (time.perf_counter() - began) / max(1, len(todo) - len(errors))
        for index, row in enumerate(todo):
            if index in errors:
                services.do_fail_predictions(prediction_pks=[row.pk], message=errors[index], task_id=task_id, model=model)
            else:
                outcomes.append(_stage_outcome(row, CLASS_NAMES, classes[index], share))
    services.do_record_predictions(outcomes=outcomes, task_id=task_id, model=model)
