"""Patients, cases, scans, the case history and radiologist reviews.

Every model has a UUID primary key, which is what URLs carry: sequential ids
would tell an outsider how many patients the clinic has and invite guessing.
"""
import uuid
from datetime import date
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import get_valid_filename


class UUIDModel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def short_id(self) -> str:
        """First block of the UUID: enough to tell records apart on screen."""
        return str(self.id)[:8]


class Patient(UUIDModel):
    class Sex(models.TextChoices):
        # The DICOM PatientSex values, so bulk import can map them directly.
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    record_id = models.CharField(
        "patient ID",
        max_length=64,
        unique=True,
        help_text="The clinic's medical record number (MRN); unique per patient.",
    )
    name = models.CharField(max_length=200)
    birth_date = models.DateField()
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="patients_created",
        null=True,
        blank=True,
    )

    class Meta:
        ordering = ("name", "record_id")

    def __str__(self) -> str:
        return f"{self.name} ({self.record_id})"

    def get_absolute_url(self) -> str:
        return reverse("diagnosis:patient-detail", kwargs={"pk": self.pk})

    @property
    def age(self) -> int:
        today = date.today()
        born = self.birth_date
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


class CaseQuerySet(models.QuerySet):
    def open(self) -> "CaseQuerySet":
        return self.exclude(status=Case.Status.REVIEWED)

    def awaiting_review(self) -> "CaseQuerySet":
        return self.filter(status=Case.Status.AWAITING_REVIEW)

    def failed(self) -> "CaseQuerySet":
        return self.filter(status=Case.Status.FAILED)


class InvalidStatusTransition(Exception):
    """A status change that the case workflow does not allow."""


class Case(UUIDModel):
    """One clinical question about one patient, answered from a set of scans."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        QUEUED = "queued", "Queued for analysis"
        PROCESSING = "processing", "Processing"
        AWAITING_REVIEW = "awaiting_review", "Awaiting review"
        REVIEWED = "reviewed", "Reviewed"
        FAILED = "failed", "Failed"

    # Which status may follow which. Re-queueing is allowed from every later
    # state, so that new scans or a re-run of the analysis can start over.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.DRAFT: frozenset({Status.QUEUED, Status.AWAITING_REVIEW}),
        Status.QUEUED: frozenset({Status.PROCESSING, Status.FAILED, Status.AWAITING_REVIEW}),
        Status.PROCESSING: frozenset({Status.AWAITING_REVIEW, Status.FAILED, Status.QUEUED}),
        Status.AWAITING_REVIEW: frozenset({Status.REVIEWED, Status.QUEUED}),
        Status.REVIEWED: frozenset({Status.QUEUED, Status.AWAITING_REVIEW}),
        Status.FAILED: frozenset({Status.QUEUED, Status.AWAITING_REVIEW, Status.REVIEWED}),
    }
    # Bootstrap colour per status, so templates never compare raw values.
    STATUS_CONTEXT: dict[str, str] = {
        Status.DRAFT: "secondary",
        Status.QUEUED: "info",
        Status.PROCESSING: "primary",
        Status.AWAITING_REVIEW: "warning",
        Status.REVIEWED: "success",
        Status.FAILED: "danger",
    }
    # A radiologist may sign off once there is something to look at. A failed
    # analysis does not stop a human from reading the images.
    REVIEWABLE = frozenset({Status.AWAITING_REVIEW, Status.REVIEWED, Status.FAILED})

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="cases")
    clinical_question = models.TextField(
        help_text="Why the scans were taken and what the referring clinician wants to know."
    )
    notes = models.TextField(blank=True, help_text="Anything else the radiologist should know.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cases_created"
    )
    assigned_radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="cases_assigned",
        limit_choices_to={"role": "radiologist", "is_active": True},
        help_text="Leave empty to put the case in every radiologist's worklist.",
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True
    )

    objects = CaseQuerySet.as_manager()

    class Meta:
        ordering = ("-created",)
        permissions = [("rerun_analysis", "Can re-run the automatic analysis of a case")]

    def __str__(self) -> str:
        return f"Case {self.short_id} · {self.patient.name}"

    def get_absolute_url(self) -> str:
        return reverse("diagnosis:case-detail", kwargs={"pk": self.pk})

    @property
    def status_context(self) -> str:
        return self.STATUS_CONTEXT[self.status]

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.REVIEWED, self.Status.FAILED)

    @property
    def is_reviewable(self) -> bool:
        return self.status in self.REVIEWABLE

    @property
    def latest_review(self) -> "Review | None":
        return self.reviews.order_by("-signed_off_at").first()

    def update_status(self, status: str, *, actor=None, message: str = "") -> bool:
        """Move the case to ``status`` and record a STATUS_CHANGED event.

        The only way a case's status changes. The row is updated only if it still
        has the status this instance holds, so two processes racing to move the
        same case cannot both succeed. Returns False (and records nothing) when
        the case is already in ``status``; raises InvalidStatusTransition when the
        workflow does not allow the move, or when another process changed the
        status first.
        """
        if status == self.status:
            return False
        if status not in self.TRANSITIONS[self.status]:
            raise InvalidStatusTransition(
                f"A case cannot go from {self.get_status_display()!r} "
                f"to {self.Status(status).label!r}."
            )
        previous = self.status
        now = timezone.now()
        with transaction.atomic():
            changed = Case.objects.filter(pk=self.pk, status=previous).update(
                status=status, modified=now
            )
            if not changed:
                raise InvalidStatusTransition(
                    "The case changed status in the meantime; reload and try again."
                )
            CaseEvent.objects.create(
                case=self,
                kind=CaseEvent.Kind.STATUS_CHANGED,
                actor=actor,
                from_status=previous,
                to_status=status,
                message=message
                or f"Status changed from {self.Status(previous).label} to {self.Status(status).label}.",
            )
        self.status = status
        self.modified = now
        return True


def scan_upload_to(instance: "Scan", filename: str) -> str:
    """Store at scans/<case-uuid>/<scan-uuid>/<safe-name>.

    Ids in the path keep names from colliding, and the name is reduced to safe
    characters so an upload can never escape its folder.
    """
    name = PurePath(filename.replace("\\", "/")).name
    try:
        safe = get_valid_filename(name)[-100:]
    except SuspiciousFileOperation:
        safe = ""
    if not safe or safe.startswith("."):
        safe = f"scan.{instance.extension}"
    return f"scans/{instance.case_id}/{instance.id}/{safe}"


def thumbnail_upload_to(instance: "Scan", filename: str) -> str:
    return f"scans/{instance.case_id}/{instance.id}/thumbnail.jpg"


class Scan(UUIDModel):
    """One uploaded image of a case. Files are served only through an access-checked view."""

    class Format(models.TextChoices):
        PNG = "PNG", "PNG"
        JPEG = "JPEG", "JPEG"
        # A frame of a DICOM file. The stored file is a lossless PNG of the frame as the
        # models see it (rescaled, windowed, MONOCHROME1 inverted), not the DICOM file:
        # the original carries identifying tags (address, institution, physicians,
        # private tags) the portal must not keep. The PACS stays the archive of record.
        DICOM = "DICOM", "DICOM"

    EXTENSIONS = {Format.PNG: "png", Format.JPEG: "jpg", Format.DICOM: "png"}
    CONTENT_TYPES = {Format.PNG: "image/png", Format.JPEG: "image/jpeg", Format.DICOM: "image/png"}

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="scans")
    image = models.ImageField(upload_to=scan_upload_to, max_length=255)
    thumbnail = models.ImageField(upload_to=thumbnail_upload_to, max_length=255, blank=True)
    original_name = models.CharField(
        max_length=255, help_text="File name as it was on the uploader's computer."
    )
    sha256 = models.CharField(
        "SHA-256",
        max_length=64,
        db_index=True,
        help_text="Hash of the stored file's bytes (for DICOM, of the frame's PNG); the same "
        "image is stored once per case.",
    )
    format = models.CharField(max_length=10, choices=Format.choices)
    width = models.PositiveIntegerField(help_text="Pixels.")
    height = models.PositiveIntegerField(help_text="Pixels.")
    size_bytes = models.PositiveBigIntegerField()
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="scans_uploaded"
    )
    uploaded_at = models.DateTimeField(default=timezone.now, editable=False)
    upload_batch = models.ForeignKey(
        "UploadBatch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="scans",
        help_text="The bulk upload or import that brought this scan in, if any.",
    )

    # DICOM provenance, empty for PNG and JPEG uploads. Patient identity is never
    # copied here: it lives in the Patient record only.
    study_uid = models.CharField("study instance UID", max_length=64, blank=True, db_index=True)
    series_uid = models.CharField("series instance UID", max_length=64, blank=True)
    sop_instance_uid = models.CharField("SOP instance UID", max_length=64, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    series_description = models.CharField(max_length=200, blank=True)
    instance_number = models.IntegerField(
        null=True, blank=True, help_text="DICOM InstanceNumber: the slice's place in its series."
    )
    frame = models.PositiveIntegerField(
        null=True, blank=True, help_text="0-based frame index within a multi-frame DICOM file."
    )
    frame_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Frames in the DICOM file this scan came from."
    )
    slice_position = models.JSONField(
        null=True,
        blank=True,
        help_text="DICOM ImagePositionPatient [x, y, z] in mm: where the slice lies in the patient.",
    )
    slice_location = models.FloatField(
        null=True, blank=True, help_text="DICOM SliceLocation in mm, when the scanner wrote it."
    )

    class Meta:
        # A study's slices in scanner order; PNG/JPEG uploads have no series and sort by name.
        ordering = ("uploaded_at", "series_uid", "instance_number", "frame", "original_name")
        constraints = [
            models.UniqueConstraint(fields=("case", "sha256"), name="unique_scan_image_per_case")
        ]

    def __str__(self) -> str:
        return self.original_name

    @property
    def extension(self) -> str:
        return self.EXTENSIONS.get(self.format, "img")

    @property
    def dimensions(self) -> str:
        return f"{self.width}×{self.height}"

    @property
    def content_type(self) -> str:
        """MIME type of the stored file (DICOM frames are stored as PNG)."""
        return self.CONTENT_TYPES.get(self.format, "application/octet-stream")

    @property
    def download_name(self) -> str:
        """File name for downloads: the original, or for a DICOM frame a .png name that says so."""
        if self.format != self.Format.DICOM:
            return self.original_name
        stem = PurePath(self.original_name.replace("\\", "/")).stem or "dicom"
        if self.frame_count and self.frame_count > 1:
            stem = f"{stem}_frame{(self.frame or 0) + 1:04d}"
        return f"{stem}.png"

    @property
    def frame_label(self) -> str:
        """'frame 3 of 20' for a frame of a multi-frame DICOM file, else ''."""
        if self.frame_count and self.frame_count > 1:
            return f"frame {(self.frame or 0) + 1} of {self.frame_count}"
        return ""

    def get_absolute_url(self) -> str:
        return reverse("diagnosis:scan-file", kwargs={"pk": self.pk})

    def get_thumbnail_url(self) -> str:
        return reverse("diagnosis:scan-thumbnail", kwargs={"pk": self.pk})


class UploadBatch(UUIDModel):
    """One bulk upload (or ``import_study`` run) into a case, with what became of each file.

    ``report`` holds one entry per file, archive member or DICOM frame, in the order
    they were read::

        {"name": "study.zip/SE2/IM0001.dcm", "outcome": "accepted" | "rejected" | "duplicate",
         "reason": "...", "scan": "<uuid>" | None, "same_as": "<uuid>" | None}

    The counts are kept next to it so lists never have to load the report. Entries
    are only ever appended: a web upload may arrive in several requests.
    """

    class Source(models.TextChoices):
        WEB = "web", "Bulk upload page"
        COMMAND = "command", "import_study command"

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        DUPLICATE = "duplicate", "Duplicate skipped"

    OUTCOME_CONTEXT: dict[str, str] = {
        Outcome.ACCEPTED: "success",
        Outcome.REJECTED: "danger",
        Outcome.DUPLICATE: "warning",
    }

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="upload_batches")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="upload_batches"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.WEB)
    files_received = models.PositiveIntegerField(
        default=0, help_text="Files and archive members looked at (folders and OS clutter excluded)."
    )
    accepted_count = models.PositiveIntegerField(default=0, help_text="Scans stored.")
    rejected_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=list, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last file was processed; empty while receiving."
    )

    class Meta:
        ordering = ("-created",)
        verbose_name_plural = "upload batches"

    def __str__(self) -> str:
        return f"Upload {self.short_id} · {self.accepted_count} scan(s) to {self.case}"

    def get_absolute_url(self) -> str:
        return reverse("diagnosis:upload-detail", kwargs={"pk": self.pk})

    @property
    def total_entries(self) -> int:
        return self.accepted_count + self.rejected_count + self.duplicate_count

    def entries(self, outcome: str | None = None) -> list[dict]:
        """Report entries, optionally only those with ``outcome``, each with a display colour."""
        return [
            {
                **entry,
                "context": self.OUTCOME_CONTEXT.get(entry["outcome"], "secondary"),
                "label": self.Outcome(entry["outcome"]).label,
            }
            for entry in self.report
            if outcome is None or entry["outcome"] == outcome
        ]


class CaseEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Case history is append-only; events cannot be changed.")


class CaseEvent(models.Model):
    """One line of a case's history: who did what, and when. Append-only."""

    class Kind(models.TextChoices):
        CREATED = "created", "Case created"
        UPDATED = "updated", "Case details changed"
        ASSIGNED = "assigned", "Radiologist assigned"
        PATIENT_UPDATED = "patient_updated", "Patient details changed"
        SCAN_UPLOADED = "scan_uploaded", "Scan uploaded"
        DUPLICATES_SKIPPED = "duplicates_skipped", "Duplicate scans skipped"
        STATUS_CHANGED = "status_changed", "Status changed"
        ANALYSIS_QUEUED = "analysis_queued", "Analysis queued"
        ANALYSIS_DELAYED = "analysis_delayed", "Analysis delayed"
        ANALYSIS_STARTED = "analysis_started", "Analysis started"
        ANALYSIS_FINISHED = "analysis_finished", "Analysis finished"
        ANALYSIS_FAILED = "analysis_failed", "Analysis failed"
        REVIEWED = "reviewed", "Reviewed"

    # (Bootstrap colour, Bootstrap icon) per kind for the timeline.
    DISPLAY: dict[str, tuple[str, str]] = {
        Kind.CREATED: ("primary", "bi-folder-plus"),
        Kind.UPDATED: ("secondary", "bi-pencil"),
        Kind.ASSIGNED: ("info", "bi-person-check"),
        Kind.PATIENT_UPDATED: ("secondary", "bi-person-vcard"),
        Kind.SCAN_UPLOADED: ("primary", "bi-image"),
        Kind.DUPLICATES_SKIPPED: ("warning", "bi-files"),
        Kind.STATUS_CHANGED: ("secondary", "bi-arrow-right-circle"),
        Kind.ANALYSIS_QUEUED: ("info", "bi-hourglass-split"),
        Kind.ANALYSIS_DELAYED: ("warning", "bi-pause-circle"),
        Kind.ANALYSIS_STARTED: ("primary", "bi-cpu"),
        Kind.ANALYSIS_FINISHED: ("success", "bi-check2-circle"),
        Kind.ANALYSIS_FAILED: ("danger", "bi-exclamation-octagon"),
        Kind.REVIEWED: ("success", "bi-clipboard2-check"),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=30, choices=Kind.choices, db_index=True)
    created = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="case_events",
        help_text="Who did it; empty for the system (for example an analysis worker).",
    )
    message = models.CharField(max_length=500)
    from_status = models.CharField(max_length=20, choices=Case.Status.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=Case.Status.choices, blank=True)
    scan = models.ForeignKey(
        Scan, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    data = models.JSONField(default=dict, blank=True, help_text="Details, for audits.")

    objects = CaseEventQuerySet.as_manager()

    class Meta:
        ordering = ("-created",)
        indexes = [models.Index(fields=("case", "-created"), name="caseevent_case_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.created:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise TypeError("Case history is append-only; events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Case history is append-only; events cannot be deleted.")

    @property
    def context(self) -> str:
        return self.DISPLAY.get(self.kind, ("secondary", "bi-dot"))[0]

    @property
    def icon(self) -> str:
        return self.DISPLAY.get(self.kind, ("secondary", "bi-dot"))[1]


class Review(UUIDModel):
    """A radiologist's sign-off on a case. A later review adds a row; none is edited."""

    class Label(models.TextChoices):
        # Values match mlcore.constants.CLASS_NAMES so agreement with the AI can be
        # computed directly.
        GLIOMA = "glioma", "Glioma"
        MENINGIOMA = "meningioma", "Meningioma"
        PITUITARY = "pituitary", "Pituitary tumour"
        NORMAL = "normal", "No tumour"
        OTHER = "other", "Other finding"
        NON_DIAGNOSTIC = "non_diagnostic", "Non-diagnostic images"

    class Agreement(models.TextChoices):
        AGREE = "agree", "Agrees with the AI result"
        PARTIAL = "partial", "Partly agrees with the AI result"
        DISAGREE = "disagree", "Disagrees with the AI result"
        NO_AI_RESULT = "no_ai_result", "No AI result to compare"

    AGREEMENT_CONTEXT: dict[str, str] = {
        Agreement.AGREE: "success",
        Agreement.PARTIAL: "warning",
        Agreement.DISAGREE: "danger",
        Agreement.NO_AI_RESULT: "secondary",
    }

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="reviews")
    final_label = models.CharField(
        max_length=20,
        choices=Label.choices,
        help_text="The radiologist's diagnosis; this, not the AI result, is the case's answer.",
    )
    ai_agreement = models.CharField(
        "agreement with AI", max_length=20, choices=Agreement.choices
    )
    findings = models.TextField(help_text="Free-text findings and recommendations.")
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews_signed"
    )
    signed_off_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("-signed_off_at",)

    def __str__(self) -> str:
        return f"{self.get_final_label_display()} by {self.signed_off_by}"

    @property
    def agreement_context(self) -> str:
        return self.AGREEMENT_CONTEXT[self.ai_agreement]


class AnalysisRun(UUIDModel):
    """One request to analyse scans of a case: the scans of an upload, or a re-run of all.

    The automatic analysis writes one ``Prediction`` per scan and stage into its
    run. A re-run (after a model update, say) adds a run and leaves the earlier
    ones as they were, so the case keeps what every model version said.
    """

    class Reason(models.TextChoices):
        UPLOAD = "upload", "New scans"
        RERUN = "rerun", "Re-run requested"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="analysis_runs")
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.UPLOAD)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="analysis_runs",
    )
    enqueued_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the work was last handed to the message broker; empty while the "
        "broker could not be reached (the periodic sweep hands it over later).",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last result of the run was written."
    )

    class Meta:
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"Analysis {self.short_id} of case {self.case.short_id}"

    @property
    def finished(self) -> bool:
        return self.completed_at is not None


class PredictionQuerySet(models.QuerySet):
    def outstanding(self) -> "PredictionQuerySet":
        """Rows a worker still has to write: waiting, or claimed and running."""
        return self.filter(status__in=Prediction.OUTSTANDING)


class Prediction(UUIDModel):
    """What one stage of the model said about one scan, in one analysis run.

    A row is created PENDING when the run is queued, claimed (STARTED) by a
    worker, and then written once, SUCCESS or FAILURE. It is never written
    again: a re-run adds rows in a new run. The unique constraint means a
    redelivered or repeated task can never add a second result.
    """

    class Stage(models.TextChoices):
        # Alphabetical order matches the pipeline order, so ordering by stage works.
        PRESENCE = "presence", "Tumour presence"
        TYPE = "type", "Tumour type"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        STARTED = "started", "Running"
        SUCCESS = "success", "Done"
        FAILURE = "failure", "Failed"

    OUTSTANDING = (Status.PENDING, Status.STARTED)
    STATUS_CONTEXT: dict[str, str] = {
        Status.PENDING: "secondary",
        Status.STARTED: "primary",
        Status.SUCCESS: "success",
        Status.FAILURE: "danger",
    }
    # Display names of the model's labels (mlcore.constants.PRESENCE_LABELS and
    # CLASS_NAMES). Kept here so the web code never imports the ML package.
    LABEL_NAMES: dict[str, str] = {
        "normal": "No tumour",
        "tumor": "Tumour",
        "glioma": "Glioma",
        "meningioma": "Meningioma",
        "pituitary": "Pituitary tumour",
    }

    run = models.ForeignKey(AnalysisRun, on_delete=models.CASCADE, related_name="predictions")
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="predictions")
    stage = models.CharField(max_length=10, choices=Stage.choices)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    label = models.CharField(max_length=20, blank=True, help_text="The most probable label.")
    probabilities = models.JSONField(
        default=dict,
        blank=True,
        help_text="Probability of every label of the stage, as the model gave them.",
    )
    model_name = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=50, blank=True)
    model_sha256 = models.CharField(
        "weights SHA-256", max_length=64, blank=True, help_text="Hash of the weights file used."
    )
    seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="Wall time this stage spent on this scan: its share of its batch's image "
        "decoding and forward pass.",
    )
    shared_forward_pass = models.BooleanField(
        default=False,
        help_text="Both stages are heads of one network: stage 2 reused the forward pass of "
        "stage 1 on the same worker, so its time is only the look-up.",
    )
    worker = models.CharField(max_length=255, blank=True, help_text="Celery worker that ran it.")
    task_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Celery task that claimed it. A message redelivered after a worker died "
        "keeps its id, so it may finish what it had claimed.",
    )
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker claimed it; above 1 after a redelivery."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    objects = PredictionQuerySet.as_manager()

    class Meta:
        ordering = ("run__created", "scan__uploaded_at", "scan__original_name", "stage")
        constraints = [
            models.UniqueConstraint(
                fields=("run", "scan", "stage"), name="one_prediction_per_run_scan_stage"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_stage_display()} of {self.scan} · {self.get_status_display()}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCESS, self.Status.FAILURE)

    @property
    def succeeded(self) -> bool:
        return self.status == self.Status.SUCCESS

    @property
    def failed(self) -> bool:
        return self.status == self.Status.FAILURE

    @property
    def status_context(self) -> str:
        return self.STATUS_CONTEXT[self.status]

    @property
    def label_display(self) -> str:
        return self.LABEL_NAMES.get(self.label, self.label)

    @property
    def confidence(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    @property
    def is_tumour(self) -> bool:
        """Stage 1 said a tumour is present (drives the verdict's colour)."""
        return self.stage == self.Stage.PRESENCE and self.label == "tumor"

    @property
    def bars(self) -> list[dict]:
        """Every label with its probability, in the model's order, for the probability bars."""
        return [
            {
                "label": label,
                "name": self.LABEL_NAMES.get(label, label),
                "probability": probability,
                "percent": round(100 * probability, 1),
                "winner": label == self.label,
            }
            for label, probability in self.probabilities.items()
        ]
