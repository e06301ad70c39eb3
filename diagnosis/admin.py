"""Django admin for every diagnosis model.

Status, scans' files and hashes, and the history are read-only here: they change
only through the services, which keep the case history in step.
"""
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from diagnosis.models import AnalysisRun, Case, CaseEvent, Patient, Prediction, Review, Scan, UploadBatch


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class CaseEventInline(ReadOnlyInline):
    model = CaseEvent
    fields = ("created", "kind", "actor", "message")
    readonly_fields = fields
    ordering = ("-created",)
    show_change_link = False
    verbose_name_plural = "History"


class ScanInline(ReadOnlyInline):
    model = Scan
    fields = ("original_name", "format", "width", "height", "sha256", "uploaded_by", "uploaded_at")
    readonly_fields = fields


class ReviewInline(ReadOnlyInline):
    model = Review
    fields = ("final_label", "ai_agreement", "signed_off_by", "signed_off_at")
    readonly_fields = fields


class CaseInline(ReadOnlyInline):
    model = Case
    fields = ("status", "clinical_question", "assigned_radiologist", "created")
    readonly_fields = fields


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("record_id", "name", "birth_date", "sex", "created")
    list_filter = ("sex",)
    search_fields = ("record_id", "name")
    readonly_fields = ("id", "created", "modified", "created_by")
    inlines = (CaseInline,)


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("short_id", "patient", "status", "assigned_radiologist", "created_by", "created")
    list_filter = ("status", "assigned_radiologist", "created")
    search_fields = ("id", "patient__name", "patient__record_id", "clinical_question")
    list_select_related = ("patient", "assigned_radiologist", "created_by")
    date_hierarchy = "created"
    raw_id_fields = ("patient",)
    # Status moves only through Case.update_status(), which writes the history.
    readonly_fields = ("id", "status", "created_by", "created", "modified")
    inlines = (ScanInline, ReviewInline, CaseEventInline)

    @admin.display(description="Case", ordering="id")
    def short_id(self, obj: Case) -> str:
        return obj.short_id

    def has_add_permission(self, request: HttpRequest) -> bool:
        # New cases need a creator and a CREATED event: open them in the portal.
        return False


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = ("original_name", "case", "format", "dimensions", "uploaded_by", "uploaded_at")
    list_filter = ("format", "uploaded_at")
    search_fields = ("original_name", "sha256", "case__id", "case__patient__record_id")
    list_select_related = ("case__patient", "uploaded_by")
    readonly_fields = (
        "id", "case", "view_file", "original_name", "sha256", "format", "width", "height",
        "size_bytes", "uploaded_by", "uploaded_at", "upload_batch",
        # DICOM provenance (empty for PNG and JPEG uploads)
        "study_uid", "series_uid", "sop_instance_uid", "modality", "series_description",
        "instance_number", "frame", "frame_count", "slice_position", "slice_location",
    )
    exclude = ("image", "thumbnail")

    @admin.display(description="File")
    def view_file(self, obj: Scan) -> str:
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">Open image</a>',
            reverse("diagnosis:scan-file", kwargs={"pk": obj.pk}),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Uploads must be validated and de-duplicated: use the portal's upload page.
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(UploadBatch)
class UploadBatchAdmin(admin.ModelAdmin):
    """Bulk uploads and imports with their per-file reports. Written only by the upload code."""

    list_display = (
        "created", "case", "uploaded_by", "source", "files_received", "accepted_count",
        "rejected_count", "duplicate_count", "finished_at",
    )
    list_filter = ("source", "created")
    search_fields = ("id", "case__id", "case__patient__record_id", "uploaded_by__username")
    list_select_related = ("case__patient", "uploaded_by")
    date_hierarchy = "created"

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in UploadBatch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(CaseEvent)
class CaseEventAdmin(admin.ModelAdmin):
    """The history, for audits. Append-only: no one adds, edits or deletes here."""

    list_display = ("created", "case", "kind", "actor", "message")
    list_filter = ("kind", "created")
    search_fields = ("message", "case__id", "case__patient__record_id", "actor__username")
    list_select_related = ("case__patient", "actor")
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ("case", "final_label", "ai_agreement", "signed_off_by", "signed_off_at")
    list_filter = ("final_label", "ai_agreement", "signed_off_at")
    search_fields = ("findings", "case__id", "case__patient__record_id", "signed_off_by__username")
    list_select_related = ("case__patient", "signed_off_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A review is a radiologist's sign-off and moves the case: use the portal.
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class PredictionInline(ReadOnlyInline):
    model = Prediction
    fields = ("scan", "stage", "status", "label", "model_version", "seconds", "worker", "attempts")
    readonly_fields = fields
    show_change_link = False


@admin.register(AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin):
    """Analysis runs and their results, for audits. Written only by the analysis tasks."""

    list_display = ("created", "case", "reason", "requested_by", "enqueued_at", "started_at", "completed_at")
    list_filter = ("reason", "created")
    search_fields = ("id", "case__id", "case__patient__record_id")
    list_select_related = ("case__patient", "requested_by")
    readonly_fields = ("id", "case", "reason", "requested_by", "enqueued_at", "started_at", "completed_at", "created")
    exclude = ("modified",)
    inlines = (PredictionInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("created", "scan", "stage", "status", "label", "model_version", "seconds", "worker", "attempts")
    list_filter = ("stage", "status", "label", "model_version")
    search_fields = ("id", "run__id", "scan__original_name", "run__case__id", "task_id")
    list_select_related = ("scan", "run")

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in Prediction._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
