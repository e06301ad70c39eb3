"""Every state change of the diagnosis app.

Views validate input and then call one ``do_*`` function. Each function applies
its whole change, including the case-history rows that describe it, in one
transaction, so the history can never disagree with the data.
"""
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageOps

from accounts.models import User
from diagnosis.models import Case, CaseEvent, Patient, Review, Scan, UploadBatch
from diagnosis.validators import ValidatedScan

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


def make_thumbnail(image_file) -> bytes:
    """A small JPEG preview of a validated image, for the case page."""
    image_file.seek(0)
    with Image.open(image_file) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # 16-bit greyscale (common for MRI exports): stretch to 8 bits for display.
            pixels = np.asarray(image, dtype=np.float32)
            low, high = float(pixels.min()), float(pixels.max())
            scale = 255.0 / (high - low) if high > low else 0.0
            image = Image.fromarray(((pixels - low) * scale).astype(np.uint8), mode="L")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.thumbnail(THUMBNAIL_SIZE)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
    image_file.seek(0)
    return out.getvalue()


def _route_new_scans(case: Case, user: User, count: int) -> None:
    """Move the case on once new scans are stored.

    Automatic analysis is not wired in yet, so new scans go straight to the
    radiologists. The analysis pipeline replaces this with queueing the scans
    (status QUEUED) once their transaction commits.
    """
    if case.status in (Case.Status.DRAFT, Case.Status.REVIEWED, Case.Status.FAILED):
        noun = "scan" if count == 1 else "scans"
        case.update_status(
            Case.Status.AWAITING_REVIEW,
            actor=user,
            message=f"{count} new {noun} ready for review.",
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
                _route_new_scans(case, user, len(result.added))
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
