"""Every state change of the diagnosis app.

Views validate input and then call one ``do_*`` function. Each function applies
its whole change, including the case-history rows that describe it, in one
transaction, so the history can never disagree with the data.
"""
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from PIL import Image, ImageOps

from accounts.models import User
from diagnosis.models import Case, CaseEvent, Patient, Review, Scan, UploadBatch
from diagnosis.models import AnalysisRun, InvalidStatusTransition, Prediction
from diagnosis.validators import ValidatedScan
from mlcore.preprocessing import stretch_to_8bit

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = (320, 320)


class ServiceError(Exception):
    """A request the workflow refuses; the message is shown to the user as is."""


# ---------------------------------------------------------------------------
# Patients
# ---------------------------------------------------------------------------
@transaction.atomic
def do_create_patient(
    *, user: User, record_id: str, name: str, birth_date: date, sex: str
) -> Patient:
    """Register a patient. A new patient has no cases, so there is no history to write."""
    patient = Patient.objects.create(
        record_id=record_id, name=name, birth_date=birth_date, sex=sex, created_by=user
    )
    logger.info("Patient %s created by %s", patient.pk, user)
    return patient


@transaction.atomic
def do_update_patient(*, patient: Patient, user: User, **fields) -> Patient:
    """Change a patient's details and note the change in the history of each of their cases.

    A report refers to the patient's details as they were, so a corrected birth
    date or name must be visible in every case that could be affected.
    """
    stored = Patient.objects.get(pk=patient.pk)
    changed = sorted(name for name, value in fields.items() if getattr(stored, name) != value)
    for name, value in fields.items():
        setattr(patient, name, value)
    if not changed:
        return patient
    patient.save()
    labels = ", ".join(str(Patient._meta.get_field(name).verbose_name) for name in changed)
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case=case,
            kind=CaseEvent.Kind.PATIENT_UPDATED,
            actor=user,
            message=f"Patient details changed: {labels}.",
            data={"changed": changed},
        )
        for case in patient.cases.all()
    )
    return patient


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------
def _assignment_event(case: Case, user: User, radiologist: User | None) -> CaseEvent:
    message = (
        f"Assigned to {radiologist}." if radiologist else "Returned to the shared worklist."
    )
    return CaseEvent(
        case=case,
        kind=CaseEvent.Kind.ASSIGNED,
        actor=user,
        message=message,
        data={"radiologist": str(radiologist.pk) if radiologist else None},
    )


def _check_radiologist(radiologist: User | None) -> None:
    if radiologist is not None and not radiologist.is_radiologist:
        raise ServiceError(f"{radiologist} is not an active radiologist.")


@transaction.atomic
def do_create_case(
    *,
    patient: Patient,
    user: User,
    clinical_question: str,
    notes: str = "",
    assigned_radiologist: User | None = None,
) -> Case:
    """Open a draft case for ``patient``; it waits for scans."""
    _check_radiologist(assigned_radiologist)
    case = Case.objects.create(
        patient=patient,
        clinical_question=clinical_question,
        notes=notes,
        created_by=user,
        assigned_radiologist=assigned_radiologist,
    )
    events = [
        CaseEvent(
            case=case,
            kind=CaseEvent.Kind.CREATED,
            actor=user,
            to_status=case.status,
            message=f"Case opened for {patient}.",
        )
    ]
    if assigned_radiologist:
        events.append(_assignment_event(case, user, assigned_radiologist))
    CaseEvent.objects.bulk_create(events)
    return case


@transaction.atomic
def do_update_case(
    *,
    case: Case,
    user: User,
    clinical_question: str,
    notes: str,
    assigned_radiologist: User | None,
) -> Case:
    """Change a case's question, notes or radiologist, recording what changed."""
    _check_radiologist(assigned_radiologist)
    stored = Case.objects.get(pk=case.pk)
    events = []
    changed = [
        name
        for name, value in (("clinical_question", clinical_question), ("notes", notes))
        if getattr(stored, name) != value
    ]
    if changed:
        labels = ", ".join(str(Case._meta.get_field(name).verbose_name) for name in changed)
        events.append(
            CaseEvent(
                case=case,
                kind=CaseEvent.Kind.UPDATED,
                actor=user,
                message=f"Changed {labels}.",
                data={"changed": changed},
            )
        )
    new_radiologist_pk = assigned_radiologist.pk if assigned_radiologist else None
    if stored.assigned_radiologist_id != new_radiologist_pk:
        events.append(_assignment_event(case, user, assigned_radiologist))
    case.clinical_question = clinical_question
    case.notes = notes
    case.assigned_radiologist = assigned_radiologist
    if events:
        case.save(update_fields=["clinical_question", "notes", "assigned_radiologist", "modified"])
        CaseEvent.objects.bulk_create(events)
    return case


# ---------------------------------------------------------------------------
# Scans
# ---------------------------------------------------------------------------
@dataclass
class ScanBatchResult:
    """What became of each file of one upload."""

    added: list[Scan] = field(default_factory=list)
    # (uploaded file name, the stored scan with the same bytes)
    duplicates: list[tuple[str, Scan]] = field(default_factory=list)
    # The analysis queued for the added scans, and whether handing it to the broker
    # failed (set once the upload's transaction has committed).
    run: AnalysisRun | None = None
    analysis_delayed: bool = False


def make_thumbnail(image_file) -> bytes:
    """A small JPEG preview of a validated image, for the case page."""
    image_file.seek(0)
    with Image.open(image_file) as image:
        image = ImageOps.exif_transpose(image)
        image = stretch_to_8bit(image)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.thumbnail(THUMBNAIL_SIZE)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
    image_file.seek(0)
    return out.getvalue()


def _route_new_scans(
    case: Case, user: User, scans: Sequence[Scan], result: "ScanBatchResult"
) -> None:
    """Queue the automatic analysis of newly stored scans (inside the upload's transaction).

    The case moves to QUEUED at once; the work is handed to the broker only after
    the transaction commits (see ``_queue_analysis``), and ``result`` then says
    whether that worked or the analysis is delayed.
    """
    result.run = _queue_analysis(
        case=case, scans=scans, user=user, reason=AnalysisRun.Reason.UPLOAD, outcome=result
    )


def _delete_files(scans: Sequence[Scan]) -> None:
    for scan in scans:
        scan.image.delete(save=False)
        if scan.thumbnail:
            scan.thumbnail.delete(save=False)


def do_add_scans(
    *,
    case: Case,
    scans: Sequence[ValidatedScan],
    user: User,
    batch: UploadBatch | None = None,
) -> ScanBatchResult:
    """Store validated uploads on ``case``, skipping images it already has.

    A file whose SHA-256 matches a scan of the case (or an earlier file of the
    same upload) is not stored again; it is reported in ``duplicates`` and noted
    once in the history. Files are written before the database transaction so
    that SQLite's write lock is held only for the short row inserts; if anything
    fails, the files written so far are removed again, so a failed upload leaves
    nothing behind. ``batch``, when given, is the bulk upload the scans belong to.
    """
    result = ScanBatchResult()
    stored = {
        scan.sha256: scan
        for scan in Scan.objects.filter(case=case, sha256__in=[s.info.sha256 for s in scans])
    }
    fresh: dict[str, ValidatedScan] = {}
    repeats: list[tuple[str, str]] = []  # (name, sha256) of later copies within this upload
    for upload in scans:
        sha256 = upload.info.sha256
        if sha256 in stored:
            result.duplicates.append((upload.name, stored[sha256]))
        elif sha256 in fresh:
            repeats.append((upload.name, sha256))
        else:
            fresh[sha256] = upload

    prepared: list[Scan] = []
    try:
        now = timezone.now()
        for upload in fresh.values():
            info = upload.info
            scan = Scan(
                case=case,
                original_name=upload.name[:255],
                sha256=info.sha256,
                format=info.format,
                width=info.width,
                height=info.height,
                size_bytes=info.size_bytes,
                uploaded_by=user,
                uploaded_at=now,
                upload_batch=batch,
                **info.dicom,
            )
            prepared.append(scan)
            scan.image.save(upload.storage_name, upload.file, save=False)
            scan.thumbnail.save(
                "thumbnail.jpg", ContentFile(make_thumbnail(upload.file)), save=False
            )
        with transaction.atomic():
            # Checked again under the write lock: a concurrent upload of the same
            # image may have committed since the first look.
            taken = {
                scan.sha256: scan
                for scan in Scan.objects.filter(case=case, sha256__in=list(fresh))
            }
            raced = [scan for scan in prepared if scan.sha256 in taken]
            result.added = [scan for scan in prepared if scan.sha256 not in taken]
            Scan.objects.bulk_create(result.added)
            same_as = {scan.sha256: scan for scan in result.added} | taken
            result.duplicates.extend((scan.original_name, taken[scan.sha256]) for scan in raced)
            result.duplicates.extend((name, same_as[sha256]) for name, sha256 in repeats)
            CaseEvent.objects.bulk_create(_upload_events(case, user, result))
            if result.added:
                case.refresh_from_db(fields=["status"])
                _route_new_scans(case, user, result.added, result)
    except BaseException:
        _delete_files(prepared)
        raise
    _delete_files(raced)
    return result


def _upload_events(case: Case, user: User, result: ScanBatchResult) -> list[CaseEvent]:
    """One event per stored scan, and one for all the duplicates of the upload."""
    events = [
        CaseEvent(
            case=case,
            kind=CaseEvent.Kind.SCAN_UPLOADED,
            actor=user,
            scan=scan,
            message=f"Uploaded {scan.original_name} ({scan.format}, {scan.dimensions}).",
            data={"sha256": scan.sha256, "size_bytes": scan.size_bytes},
        )
        for scan in result.added
    ]
    if result.duplicates:
        names = ", ".join(name for name, _ in result.duplicates)
        events.append(
            CaseEvent(
                case=case,
                kind=CaseEvent.Kind.DUPLICATES_SKIPPED,
                actor=user,
                message=f"Skipped {len(result.duplicates)} duplicate file(s): {names}"[:500],
                data={
                    "files": [
                        {"name": name, "same_as": str(existing.pk)}
                        for name, existing in result.duplicates
                    ]
                },
            )
        )
    return events


def do_add_scan(*, case: Case, scan: ValidatedScan, user: User) -> Scan | None:
    """Store one validated upload; None if the case already has the same image."""
    result = do_add_scans(case=case, scans=[scan], user=user)
    return result.added[0] if result.added else None


# ---------------------------------------------------------------------------
# Upload batches (bulk upload and import_study; the file handling is in diagnosis/bulk.py)
# ---------------------------------------------------------------------------
def do_create_upload_batch(
    *, case: Case, user: User, source: str = UploadBatch.Source.WEB
) -> UploadBatch:
    """Open an empty batch for ``user``'s bulk upload into ``case``.

    Requires a user who may upload scans; the caller has already checked that the
    case is within the user's reach.
    """
    if not user.has_perm("diagnosis.add_scan"):
        raise ServiceError("Only technicians and administrators upload scans.")
    return UploadBatch.objects.create(case=case, uploaded_by=user, source=source)


@transaction.atomic
def do_record_upload_report(
    *, batch: UploadBatch, entries: Sequence[dict], files_received: int, finished: bool = False
) -> UploadBatch:
    """Append ``entries`` to the batch's per-file report and update its counts.

    Entries are appended, never rewritten: the row is read again inside the
    transaction so that requests adding to the same batch cannot lose each
    other's lines. ``finished`` stamps the batch as complete.
    """
    stored = UploadBatch.objects.select_for_update().get(pk=batch.pk)
    outcomes = [entry["outcome"] for entry in entries]
    stored.report = [*stored.report, *entries]
    stored.files_received += files_received
    stored.accepted_count += outcomes.count(UploadBatch.Outcome.ACCEPTED)
    stored.rejected_count += outcomes.count(UploadBatch.Outcome.REJECTED)
    stored.duplicate_count += outcomes.count(UploadBatch.Outcome.DUPLICATE)
    if finished and stored.finished_at is None:
        stored.finished_at = timezone.now()
    stored.save()
    for name in ("report", "files_received", "accepted_count", "rejected_count",
                 "duplicate_count", "finished_at", "modified"):
        setattr(batch, name, getattr(stored, name))
    return batch


# ---------------------------------------------------------------------------
# Reviews
# ---------------------------------------------------------------------------
@transaction.atomic
def do_submit_review(
    *, case: Case, user: User, final_label: str, ai_agreement: str, findings: str
) -> Review:
    """Record a radiologist's sign-off and mark the case reviewed.

    Requires a radiologist and a case with something to review (see
    ``Case.REVIEWABLE``). An unassigned case is assigned to the reviewer. A
    second review of a reviewed case is an addendum: a new row, the old one kept.
    """
    if not user.can_review:
        raise ServiceError("Only radiologists can sign off a review.")
    case.refresh_from_db(fields=["status", "assigned_radiologist"])
    if not case.is_reviewable:
        raise ServiceError(
            f"This case is {case.get_status_display().lower()}; it can be reviewed once "
            "its scans are ready."
        )
    if case.assigned_radiologist_id is None:
        case.assigned_radiologist = user
        case.save(update_fields=["assigned_radiologist", "modified"])
        _assignment_event(case, user, user).save()
    elif case.assigned_radiologist_id != user.pk:
        raise ServiceError(f"This case is assigned to {case.assigned_radiologist}.")

    review = Review.objects.create(
        case=case,
        final_label=final_label,
        ai_agreement=ai_agreement,
        findings=findings,
        signed_off_by=user,
    )
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.REVIEWED,
        actor=user,
        message=(
            f"Signed off: {review.get_final_label_display()}. "
            f"{review.get_ai_agreement_display()}."
        ),
        data={
            "review": str(review.pk),
            "final_label": final_label,
            "ai_agreement": ai_agreement,
        },
    )
    case.update_status(Case.Status.REVIEWED, actor=user)
    return review


# ---------------------------------------------------------------------------
# Automatic analysis
#
# The web side queues work (``_queue_analysis``, ``do_rerun_analysis``); the
# Celery tasks in mlcore/tasks.py claim and record it through the functions
# below, which own every change to AnalysisRun, Prediction and the case's
# status and history. Each write is a conditional update, so a redelivered or
# duplicated task can never record a result twice.
# ---------------------------------------------------------------------------
try:
    from kombu.exceptions import OperationalError as _KombuOperationalError
except ImportError:  # pragma: no cover - kombu comes with celery
    _KombuOperationalError = ConnectionError

# Raised when the message broker cannot be reached to publish a task.
BROKER_ERRORS: tuple[type[BaseException], ...] = (_KombuOperationalError, ConnectionError)

ANALYSIS_DELAYED_MESSAGE = (
    "The analysis service could not be reached. The scans are saved and will be "
    "analysed automatically as soon as it is back."
)


@dataclass
class AnalysisRequest:
    """A queued analysis and whether handing it to the broker failed (after commit)."""

    run: AnalysisRun
    analysis_delayed: bool = False


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced a result: recorded on every prediction."""

    name: str
    version: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class StageOutcome:
    """One successful stage result for one claimed prediction."""

    prediction_pk: object
    label: str
    probabilities: dict[str, float]
    seconds: float
    shared_forward_pass: bool = False


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _queue_analysis(
    *,
    case: Case,
    scans: Sequence[Scan],
    user: User | None,
    reason: str,
    outcome: ScanBatchResult | AnalysisRequest,
) -> AnalysisRun:
    """Inside the caller's transaction: create the run with a PENDING prediction per scan
    and stage, move the case to QUEUED, and publish stage 1 once the transaction commits.

    Publishing happens in ``transaction.on_commit`` so a worker never looks for rows
    that are not committed yet (grand-challenge's pattern). It is not
    ``delay_on_commit``: that would let a broker error escape from the commit of an
    upload that is already saved. Instead ``outcome.analysis_delayed`` is set, the
    history says so, and the periodic sweep hands the run over later.
    """
    run = AnalysisRun.objects.create(case=case, reason=reason, requested_by=user)
    Prediction.objects.bulk_create(
        Prediction(run=run, scan=scan, stage=stage) for scan in scans for stage in Prediction.Stage
    )
    scans_text = _plural(len(scans), "scan")
    if reason == AnalysisRun.Reason.RERUN:
        message = f"Re-run of the analysis requested for {scans_text}."
    else:
        message = f"Analysis of {scans_text} queued."
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.ANALYSIS_QUEUED,
        actor=user,
        message=message,
        data={"run": str(run.pk), "scans": len(scans), "reason": reason},
    )
    case.refresh_from_db(fields=["status"])
    case.update_status(Case.Status.QUEUED, actor=user, message=f"{message} Waiting for a worker.")

    def publish() -> None:
        if enqueue_analysis(run_pk=str(run.pk), stage=Prediction.Stage.PRESENCE):
            return
        outcome.analysis_delayed = True
        CaseEvent.objects.create(
            case=case,
            kind=CaseEvent.Kind.ANALYSIS_DELAYED,
            message=ANALYSIS_DELAYED_MESSAGE,
            data={"run": str(run.pk)},
        )

    transaction.on_commit(publish)
    return run


def enqueue_analysis(*, run_pk: str, stage: str) -> bool:
    """Publish the task for ``stage`` of run ``run_pk`` now; False if the broker is down.

    Must be called outside a transaction (after commit). Success stamps the run's
    ``enqueued_at``; failure clears it, so the next sweep picks the run up.
    """
    # Imported here, as grand-challenge does, to keep diagnosis free of a circular
    # import; mlcore.tasks imports no TensorFlow at module level.
    from mlcore.tasks import analyse_presence, analyse_type

    task = analyse_presence if stage == Prediction.Stage.PRESENCE else analyse_type
    try:
        task.delay(run_pk=run_pk)
    except BROKER_ERRORS as exc:
        logger.warning("Could not queue %s of analysis %s: %s", task.name, run_pk, exc)
        AnalysisRun.objects.filter(pk=run_pk).update(enqueued_at=None)
        return False
    AnalysisRun.objects.filter(pk=run_pk).update(enqueued_at=timezone.now())
    return True


@transaction.atomic
def do_rerun_analysis(*, case: Case, user: User) -> AnalysisRequest:
    """Analyse every scan of ``case`` again, e.g. after a model update.

    Requires the ``rerun_analysis`` permission (radiologists and administrators), a
    case with scans, and no analysis in progress. The earlier results stay in
    their runs; the case goes to QUEUED and on to awaiting review (or failed) when
    the new run finishes. ``analysis_delayed`` is set after commit if the broker
    could not be reached.
    """
    if not user.has_perm("diagnosis.rerun_analysis"):
        raise ServiceError("Only radiologists and administrators can re-run the analysis.")
    scans = list(case.scans.all())
    if not scans:
        raise ServiceError("This case has no scans to analyse.")
    if Prediction.objects.filter(run__case=case).outstanding().exists():
        raise ServiceError("An analysis of this case is already in progress.")
    request = AnalysisRequest(run=None)  # type: ignore[arg-type]
    request.run = _queue_analysis(
        case=case, scans=scans, user=user, reason=AnalysisRun.Reason.RERUN, outcome=request
    )
    return request


def _claimable(*, task_id: str, now) -> Q:
    """Rows a task may claim: waiting ones, its own (a redelivered message keeps its
    task id and resumes), and ones held past the hard time limit (their worker is gone)."""
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    return (
        Q(status=Prediction.Status.PENDING)
        | Q(status=Prediction.Status.STARTED, task_id=task_id)
        | Q(status=Prediction.Status.STARTED, started_at__lt=stale)
    )


def claimable_prediction_pks(*, run_pk: str, stage: str, task_id: str) -> list:
    """Ids of the rows of ``stage`` in run ``run_pk`` that the task may work on, in scan order.

    A stage-2 row waits while its scan's stage-1 row is outstanding (a duplicate
    stage-2 message must not run ahead of a stage 1 that is still working).
    """
    rows = Prediction.objects.filter(_claimable(task_id=task_id, now=timezone.now())).filter(
        run_id=run_pk, stage=stage
    )
    if stage == Prediction.Stage.TYPE:
        stage_one_busy = Prediction.objects.filter(
            run_id=OuterRef("run_id"),
            scan_id=OuterRef("scan_id"),
            stage=Prediction.Stage.PRESENCE,
            status__in=Prediction.OUTSTANDING,
        )
        rows = rows.filter(~Exists(stage_one_busy))
    return list(
        rows.order_by("scan__uploaded_at", "scan__original_name", "scan_id").values_list("pk", flat=True)
    )


def claim_predictions(*, prediction_pks: Sequence, task_id: str, worker: str) -> list[Prediction]:
    """Move each row to STARTED for this task, if it is still claimable, and return those.

    One conditional UPDATE per row (healthchecks' pattern): a row counts as ours
    only if the update changed it, so two workers never both own a row. On
    SQLite, ``select_for_update`` would do nothing.
    """
    now = timezone.now()
    claimable = _claimable(task_id=task_id, now=now)
    claimed = []
    with transaction.atomic():
        for pk in prediction_pks:
            changed = Prediction.objects.filter(claimable, pk=pk).update(
                status=Prediction.Status.STARTED,
                task_id=task_id,
                worker=worker[:255],
                started_at=now,
                attempts=F("attempts") + 1,
                modified=now,
            )
            if changed:
                claimed.append(pk)
    by_pk = Prediction.objects.select_related("scan", "run").in_bulk(claimed)
    return [by_pk[pk] for pk in claimed]


def do_record_predictions(
    *, outcomes: Sequence[StageOutcome], task_id: str, model: ModelIdentity
) -> int:
    """Write the results of claimed rows (STARTED by ``task_id`` -> SUCCESS) in one transaction.

    A row that is no longer this task's, or already written, is left alone, so a
    duplicate run cannot record twice. Returns how many rows were written.
    """
    now = timezone.now()
    written = 0
    with transaction.atomic():
        for outcome in outcomes:
            written += Prediction.objects.filter(
                pk=outcome.prediction_pk, status=Prediction.Status.STARTED, task_id=task_id
            ).update(
                status=Prediction.Status.SUCCESS,
                label=outcome.label,
                probabilities=outcome.probabilities,
                seconds=outcome.seconds,
                shared_forward_pass=outcome.shared_forward_pass,
                model_name=model.name,
                model_version=model.version,
                model_sha256=model.sha256,
                error_message="",
                completed_at=now,
                modified=now,
            )
    return written


def do_fail_predictions(
    *,
    prediction_pks: Sequence,
    message: str,
    task_id: str,
    model: ModelIdentity | None = None,
) -> int:
    """Mark rows FAILURE with a short user-facing ``message``, if the task may claim them.

    Used for a scan that cannot be decoded (both its rows), for rows whose stage 1
    failed, and when the model or the task itself fails. Returns the rows written.
    """
    now = timezone.now()
    fields = {
        "status": Prediction.Status.FAILURE,
        "error_message": message[:500],
        "completed_at": now,
        "modified": now,
        "task_id": task_id,
    }
    if model is not None:
        fields.update(model_name=model.name, model_version=model.version, model_sha256=model.sha256)
    return (
        Prediction.objects.filter(_claimable(task_id=task_id, now=now), pk__in=list(prediction_pks))
        .update(**fields)
    )


def do_start_analysis_run(*, run: AnalysisRun, worker: str, model: ModelIdentity) -> bool:
    """Note the first time a worker starts on ``run``: history, and the case to PROCESSING.

    Conditional on the run having no start time yet, so a redelivered task does not
    write a second event. Returns True for the call that recorded the start.
    """
    now = timezone.now()
    with transaction.atomic():
        if not AnalysisRun.objects.filter(pk=run.pk, started_at__isnull=True).update(
            started_at=now, modified=now
        ):
            return False
        run.started_at = now
        count = run.predictions.filter(stage=Prediction.Stage.PRESENCE).count()
        CaseEvent.objects.create(
            case_id=run.case_id,
            kind=CaseEvent.Kind.ANALYSIS_STARTED,
            message=f"Analysis of {_plural(count, 'scan')} started on {worker} with {model}.",
            data={"run": str(run.pk), "worker": worker, "model": model.__dict__},
        )
        case = Case.objects.get(pk=run.case_id)
        if case.status == Case.Status.QUEUED:
            _move_case(case, Case.Status.PROCESSING, "Analysis started.")
    return True


def _move_case(case: Case, status: str, message: str) -> None:
    try:
        case.update_status(status, message=message)
    except InvalidStatusTransition:
        # Another process moved the case first; its move stands.
        logger.info("Case %s not moved to %s: it changed meanwhile", case.pk, status)


def do_finish_analysis_run(*, run: AnalysisRun) -> bool:
    """Close ``run`` once none of its rows is outstanding: history, then the case status.

    Writes one ANALYSIS_FINISHED event (if any scan was analysed) and one
    ANALYSIS_FAILED event per distinct failure reason. When no other run of the
    case is outstanding, the case moves to AWAITING_REVIEW, or to FAILED with the
    reason if the latest analysis of every scan failed. Conditional on the run not
    being closed yet, so it happens once. Returns True for the call that closed it.
    """
    now = timezone.now()
    with transaction.atomic():
        if run.predictions.outstanding().exists():
            return False
        if not AnalysisRun.objects.filter(pk=run.pk, completed_at__isnull=True).update(
            completed_at=now, modified=now
        ):
            return False
        run.completed_at = now
        rows = list(run.predictions.select_related("scan").order_by("stage"))
        failures: dict[str, list[Scan]] = {}
        failed_scans: set = set()
        for row in rows:  # presence rows first: a scan's first failure is its reason
            if row.failed and row.scan_id not in failed_scans:
                failed_scans.add(row.scan_id)
                failures.setdefault(row.error_message, []).append(row.scan)
        analysed = [
            row for row in rows if row.stage == Prediction.Stage.PRESENCE
            and row.scan_id not in failed_scans
        ]
        events = []
        if analysed:
            model = f"{analysed[0].model_name} {analysed[0].model_version}"
            events.append(
                CaseEvent(
                    case_id=run.case_id,
                    kind=CaseEvent.Kind.ANALYSIS_FINISHED,
                    message=(
                        f"Analysis finished: {len(analysed)} of "
                        f"{_plural(len(analysed) + len(failed_scans), 'scan')} analysed with {model}."
                    ),
                    data={"run": str(run.pk), "analysed": len(analysed), "failed": len(failed_scans)},
                )
            )
        for reason, scans in failures.items():
            names = ", ".join(scan.original_name for scan in scans)
            events.append(
                CaseEvent(
                    case_id=run.case_id,
                    kind=CaseEvent.Kind.ANALYSIS_FAILED,
                    scan=scans[0] if len(scans) == 1 else None,
                    message=f"Could not analyse {names}: {reason}"[:500],
                    data={"run": str(run.pk), "scans": [str(scan.pk) for scan in scans]},
                )
            )
        CaseEvent.objects.bulk_create(events)
        case = Case.objects.get(pk=run.case_id)
        case_rows = Prediction.objects.filter(run__case_id=run.case_id)
        if case.status in (Case.Status.QUEUED, Case.Status.PROCESSING) and not case_rows.outstanding().exists():
            if _case_has_results(case_rows):
                _move_case(case, Case.Status.AWAITING_REVIEW, "Analysis finished; ready for review.")
            else:
                reason = next(iter(failures), "no result")
                _move_case(case, Case.Status.FAILED, f"Analysis failed: {reason}"[:500])
    return True


def _case_has_results(case_rows) -> bool:
    """Whether the latest analysis of at least one scan of the case answered stage 1.

    A run whose every scan failed does not fail a case whose other scans were
    analysed by earlier uploads; a re-run that fails for every scan does.
    """
    latest: dict = {}
    for scan_id, status in (
        case_rows.filter(stage=Prediction.Stage.PRESENCE)
        .order_by("run__created")
        .values_list("scan_id", "status")
    ):
        latest[scan_id] = status
    return Prediction.Status.SUCCESS in latest.values()


def do_requeue_pending_analyses() -> int:
    """Hand over again the runs whose work never reached a worker; returns how many.

    Picks runs that are not finished and were either never handed to the broker
    (it was down at upload) or handed over longer ago than ANALYSIS_REQUEUE_AFTER
    (the message was lost, e.g. Redis restarted without its data). A run with
    nothing outstanding is closed instead. A duplicate message is harmless: the
    claims let only one task work on each row.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.ANALYSIS_REQUEUE_AFTER)
    runs = AnalysisRun.objects.filter(completed_at__isnull=True).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=cutoff)
    )
    queued = 0
    for run in runs.order_by("created"):
        outstanding = run.predictions.outstanding()
        if not outstanding.exists():
            do_finish_analysis_run(run=run)
            continue
        stage = (
            Prediction.Stage.PRESENCE
            if outstanding.filter(stage=Prediction.Stage.PRESENCE).exists()
            else Prediction.Stage.TYPE
        )
        if not enqueue_analysis(run_pk=str(run.pk), stage=stage):
            break  # the broker is down: the next sweep tries again
        queued += 1
    if queued:
        logger.info("Sweep handed %d pending analysis run(s) to the broker", queued)
    return queued
