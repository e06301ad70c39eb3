"""Pages of the diagnosis app. Views stay thin: check access, validate, call a service."""
from functools import cached_property

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import CreateView, DetailView, FormView, ListView, TemplateView, View
from django.views.generic.edit import UpdateView

from accounts.mixins import RoleRequiredMixin
from accounts.models import User
from diagnosis.access import CaseAccessMixin, batches_for, cases_for, scans_for
from diagnosis.bulk import StudyImporter
from diagnosis.forms import (
    BULK_ACCEPT,
    BulkUploadForm,
    CaseFilterForm,
    CaseForm,
    DicomPatientForm,
    PatientForm,
    PatientSearchForm,
    ReviewForm,
    ScanUploadForm,
)
from diagnosis.models import Case, Patient, Scan, UploadBatch
from diagnosis.progress import batch_progress, case_uploads_context, progress_of
from diagnosis.results import CaseAnalysis, case_analysis
from diagnosis.services import (
    ANALYSIS_DELAYED_MESSAGE,
    ServiceError,
    do_add_scans,
    do_create_case,
    do_create_upload_batch,
    do_create_patient,
    do_rerun_analysis,
    do_submit_review,
    do_update_case,
    do_update_patient,
)

DASHBOARD_LIST_SIZE = 8
# The bulk upload page sends a large study in requests of at most this many files or
# bytes (a single larger file goes alone): a dropped connection costs one request, and
# each request stays far below the server's timeout and DATA_UPLOAD_MAX_NUMBER_FILES.
BULK_FILES_PER_REQUEST = 100
BULK_BYTES_PER_REQUEST = 64 * 1024 * 1024


class DashboardView(LoginRequiredMixin, TemplateView):
    """The home page: what needs this user's attention, by role."""

    template_name = "diagnosis/dashboard.html"

    def get_context_data(self, **kwargs):
        user = self.request.user
        cases = cases_for(user)
        counts = dict(cases.values_list("status").annotate(n=Count("id")).order_by())
        context = super().get_context_data(**kwargs)
        context["status_counts"] = [
            {"status": status, "label": label, "count": counts.get(status, 0),
             "context": Case.STATUS_CONTEXT[status]}
            for status, label in Case.Status.choices
        ]
        context["awaiting_review"] = cases.awaiting_review().order_by("created")[:DASHBOARD_LIST_SIZE]
        context["recent_failures"] = cases.failed().order_by("-modified")[:DASHBOARD_LIST_SIZE]
        if user.is_technician:
            context["my_open_cases"] = cases.open().order_by("-modified")[:DASHBOARD_LIST_SIZE]
        elif user.is_radiologist:
            context["my_open_cases"] = (
                cases.filter(assigned_radiologist=user).open().order_by("-modified")
            )[:DASHBOARD_LIST_SIZE]
            context["recently_reviewed"] = (
                cases.filter(reviews__signed_off_by=user).distinct().order_by("-modified")
            )[:DASHBOARD_LIST_SIZE]
        else:
            context["my_open_cases"] = cases.open().order_by("-modified")[:DASHBOARD_LIST_SIZE]
        if user.is_portal_admin:
            context["user_counts"] = dict(
                User.objects.filter(is_active=True).values_list("role").annotate(n=Count("id")).order_by()
            )
        return context


# ---------------------------------------------------------------------------
# Patients
# ---------------------------------------------------------------------------
class PatientListView(RoleRequiredMixin, ListView):
    permission_required = "diagnosis.view_patient"
    model = Patient
    paginate_by = 25
    context_object_name = "patients"

    def get_queryset(self) -> QuerySet[Patient]:
        patients = Patient.objects.annotate(case_count=Count("cases")).order_by("name", "record_id")
        self.search_form = PatientSearchForm(self.request.GET or None)
        if self.search_form.is_valid() and (q := self.search_form.cleaned_data["q"].strip()):
            patients = patients.filter(Q(name__icontains=q) | Q(record_id__icontains=q))
        return patients

    def get_context_data(self, **kwargs):
        return super().get_context_data(search_form=self.search_form, **kwargs)


class PatientDetailView(RoleRequiredMixin, DetailView):
    permission_required = "diagnosis.view_patient"
    model = Patient
    context_object_name = "patient"

    def get_context_data(self, **kwargs):
        # Only the cases this user may open, even on the patient's own page.
        cases = cases_for(self.request.user).filter(patient=self.object)
        return super().get_context_data(cases=cases, **kwargs)


class PatientCreateView(RoleRequiredMixin, CreateView):
    permission_required = "diagnosis.add_patient"
    model = Patient
    form_class = PatientForm

    def get_context_data(self, **kwargs):
        # "Fill from a DICOM file" (PatientFromDicomView) sits above the form.
        kwargs.setdefault("dicom_form", DicomPatientForm())
        return super().get_context_data(**kwargs)

    def form_valid(self, form: PatientForm) -> HttpResponse:
        patient = do_create_patient(user=self.request.user, **form.cleaned_data)
        messages.success(self.request, f"Patient {patient} registered.")
        return redirect(patient)


class PatientUpdateView(RoleRequiredMixin, UpdateView):
    permission_required = "diagnosis.change_patient"
    model = Patient
    form_class = PatientForm

    def form_valid(self, form: PatientForm) -> HttpResponse:
        patient = do_update_patient(
            patient=self.object, user=self.request.user, **form.cleaned_data
        )
        messages.success(self.request, f"Patient {patient} saved.")
        return redirect(patient)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------
class CaseListView(RoleRequiredMixin, ListView):
    permission_required = "diagnosis.view_case"
    paginate_by = 20
    context_object_name = "cases"
    template_name = "diagnosis/case_list.html"

    def get_queryset(self) -> QuerySet[Case]:
        cases = cases_for(self.request.user).annotate(scan_count=Count("scans")).order_by("-created")
        self.filter_form = CaseFilterForm(self.request.GET or None, cases=cases_for(self.request.user))
        return self.filter_form.filter(cases)

    def get_context_data(self, **kwargs):
        return super().get_context_data(filter_form=self.filter_form, **kwargs)


class CaseDetailView(CaseAccessMixin, DetailView):
    permission_required = "diagnosis.view_case"
    context_object_name = "case"

    def get_context_data(self, **kwargs):
        case = self.object
        return super().get_context_data(
            scans=case.scans.select_related("uploaded_by"),
            events=case.events.select_related("actor", "scan"),
            reviews=case.reviews.select_related("signed_off_by"),
            can_upload=self.request.user.has_perm("diagnosis.add_scan"),
            can_edit=self.request.user.has_perm("diagnosis.change_case"),
            can_review=self.request.user.can_review and case.is_reviewable,
            live=True,
            **_analysis_context(self.request.user, case),
            **kwargs,
        )


class CaseCreateView(RoleRequiredMixin, CreateView):
    permission_required = "diagnosis.add_case"
    model = Case
    form_class = CaseForm

    def get_initial(self):
        # "New case" on a patient's page preselects that patient.
        initial = super().get_initial()
        try:
            initial["patient"] = Patient.objects.get(pk=self.request.GET["patient"])
        except (KeyError, ValidationError, Patient.DoesNotExist):
            pass
        return initial

    def form_valid(self, form: CaseForm) -> HttpResponse:
        try:
            case = do_create_case(user=self.request.user, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, "Case opened. Upload its scans next.")
        return redirect("diagnosis:scan-upload", pk=case.pk)


class CaseUpdateView(CaseAccessMixin, UpdateView):
    permission_required = "diagnosis.change_case"
    form_class = CaseForm
    context_object_name = "case"

    def form_valid(self, form: CaseForm) -> HttpResponse:
        # The form has already changed self.object in memory; the service compares
        # against the stored row.
        case = Case.objects.get(pk=self.object.pk)
        try:
            do_update_case(case=case, user=self.request.user, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, "Case saved.")
        return redirect(case)


# ---------------------------------------------------------------------------
# Scans
# ---------------------------------------------------------------------------
class ScanUploadView(CaseAccessMixin, FormView):
    """Upload one or many images to a case; each file is accepted or rejected on its own."""

    permission_required = "diagnosis.add_scan"
    form_class = ScanUploadForm
    template_name = "diagnosis/scan_form.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(case=self.case, **kwargs)

    def form_valid(self, form: ScanUploadForm) -> HttpResponse:
        result = do_add_scans(case=self.case, scans=form.accepted, user=self.request.user)
        if result.added:
            noun = "scan" if len(result.added) == 1 else "scans"
            messages.success(self.request, f"{len(result.added)} {noun} uploaded.")
            _tell_analysis_queued(self.request, delayed=result.analysis_delayed)
        for name, existing in result.duplicates:
            messages.warning(
                self.request,
                f"“{name}” was not stored again: it is the same image as "
                f"“{existing.original_name}”, already on this case.",
            )
        for message in form.rejected_messages:
            messages.error(self.request, f"Not uploaded: {message}")
        return redirect(self.case)


class ScanFileMixin(RoleRequiredMixin):
    permission_required = "diagnosis.view_scan"
    http_method_names = ["get", "head"]

    def get_scan(self) -> Scan:
        return get_object_or_404(scans_for(self.request.user), pk=self.kwargs["pk"])

    @staticmethod
    def private(response: HttpResponse) -> HttpResponse:
        # Patient images: browsers may cache them, shared caches may not.
        patch_cache_control(response, private=True, max_age=3600)
        return response


class ScanFileView(ScanFileMixin, View):
    """The original image, after an access check. Media files have no public URL."""

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        scan = self.get_scan()
        try:
            handle = scan.image.open("rb")
        except FileNotFoundError:
            raise Http404("The image file is missing from storage.") from None
        response = FileResponse(
            handle, content_type=scan.content_type, filename=scan.download_name
        )
        return self.private(response)


class ScanThumbnailView(ScanFileMixin, View):
    def get(self, request: HttpRequest, pk) -> HttpResponse:
        scan = self.get_scan()
        if not scan.thumbnail:
            raise Http404("No thumbnail.")
        try:
            handle = scan.thumbnail.open("rb")
        except FileNotFoundError:
            raise Http404("The thumbnail file is missing from storage.") from None
        return self.private(FileResponse(handle, content_type="image/jpeg"))


# ---------------------------------------------------------------------------
# Bulk upload: whole studies, folders and .zip archives (diagnosis/bulk.py does the work)
# ---------------------------------------------------------------------------
def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


def _check_csrf(request: HttpRequest) -> HttpResponse | None:
    """Run Django's CSRF check now; returns the rejection response, or None if it passes.

    The check reads the request body, and for a bulk upload that means receiving
    hundreds of megabytes. Running it here, after the role and case checks, means
    an outsider's upload is refused before any of it is spooled to disk.
    """
    return CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})


def _display_name(path: str, fallback: str) -> str:
    """The relative path the browser sent for a file from a dropped folder, tidied for display."""
    cleaned = "/".join(part for part in path.replace("\\", "/").split("/") if part not in ("", ".", ".."))
    return (cleaned or fallback)[:255]


@method_decorator(csrf_exempt, name="dispatch")  # checked in post(), after access checks
class BulkUploadView(CaseAccessMixin, TemplateView):
    """Upload a whole study into a case: many files, dropped folders, .zip archives, DICOM.

    The page sends files in several requests with a progress bar (JavaScript), or all
    at once as a plain form. Each request adds to one UploadBatch; the answer is JSON
    for the page's script, a redirect to the batch report otherwise.
    """

    permission_required = "diagnosis.add_scan"
    template_name = "diagnosis/bulk_upload.html"
    http_method_names = ["get", "post"]

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", BulkUploadForm(case=self.case, user=self.request.user))
        return super().get_context_data(
            case=self.case,
            accept=BULK_ACCEPT,
            max_files=min(settings.DIAGNOSIS_MAX_FILES_PER_UPLOAD, BULK_FILES_PER_REQUEST),
            request_bytes=BULK_BYTES_PER_REQUEST,
            max_scan_mb=settings.DIAGNOSIS_MAX_SCAN_MB,
            max_dicom_mb=settings.DIAGNOSIS_MAX_DICOM_MB,
            recent_batches=self.case.upload_batches.filter(uploaded_by=self.request.user)[:5],
            **kwargs,
        )

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if (rejected := _check_csrf(request)) is not None:
            return rejected
        form = BulkUploadForm(request.POST, case=self.case, user=request.user)
        files = request.FILES.getlist("files")
        if form.is_valid() and not files and not form.cleaned_data["finish"]:
            form.add_error(None, "Choose at least one file, folder or .zip archive.")
        if not form.is_valid():
            if _wants_json(request):
                return JsonResponse({"errors": [m for ms in form.errors.values() for m in ms]}, status=400)
            return self.render_to_response(self.get_context_data(form=form), status=400)

        batch = form.cleaned_data["batch"] or do_create_upload_batch(case=self.case, user=request.user)
        importer = StudyImporter(batch=batch, accept_other_patient=form.cleaned_data["accept_other_patient"])
        paths = request.POST.getlist("paths")
        for index, file in enumerate(files):
            path = paths[index] if len(paths) == len(files) else ""
            importer.add_upload(file, name=_display_name(path, file.name or "unnamed file"))
        # A plain form post is the whole upload; the script says which request is its last.
        batch = importer.finish(complete=form.cleaned_data["finish"] or not _wants_json(request))
        if _wants_json(request):
            return JsonResponse(
                {
                    "batch": str(batch.pk),
                    "report_url": batch.get_absolute_url(),
                    "accepted": batch.accepted_count,
                    "rejected": batch.rejected_count,
                    "duplicates": batch.duplicate_count,
                    "entries": [
                        {key: entry[key] for key in ("name", "outcome", "reason")}
                        for entry in importer.new_entries
                    ],
                }
            )
        return redirect(batch)


class UploadBatchListView(RoleRequiredMixin, ListView):
    """"My uploads": the user's bulk uploads, newest first, with live analysis progress."""

    permission_required = "diagnosis.add_scan"
    template_name = "diagnosis/uploadbatch_list.html"
    context_object_name = "batches"
    paginate_by = 20

    def get_queryset(self) -> QuerySet[UploadBatch]:
        return batches_for(self.request.user).filter(uploaded_by=self.request.user).defer("report")

    def get_template_names(self) -> list[str]:
        if self.request.htmx:
            return ["diagnosis/partials/uploadbatch_table.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        progress = batch_progress(context["batches"])
        context["rows"] = [(batch, progress[batch.pk]) for batch in context["batches"]]
        context["polling"] = any(not p.finished for p in progress.values())
        return context


class UploadBatchMixin(RoleRequiredMixin):
    """A batch of a case the user may see; anyone else gets 404."""

    permission_required = "diagnosis.view_scan"
    http_method_names = ["get", "head"]

    def check_object_access(self) -> None:
        self.batch  # noqa: B018 - loading it raises Http404 for outsiders

    @cached_property
    def batch(self) -> UploadBatch:
        return get_object_or_404(batches_for(self.request.user), pk=self.kwargs["pk"])


class UploadBatchDetailView(UploadBatchMixin, TemplateView):
    """The per-file report of one bulk upload, and its analysis progress."""

    template_name = "diagnosis/uploadbatch_detail.html"

    def get_context_data(self, **kwargs):
        batch = self.batch
        outcome = self.request.GET.get("outcome")
        if outcome not in UploadBatch.Outcome.values:
            outcome = None
        return super().get_context_data(
            batch=batch,
            case=batch.case,
            progress=progress_of(batch),
            entries=batch.entries(outcome),
            outcome=outcome,
            outcomes=UploadBatch.Outcome.choices,
            **kwargs,
        )


class UploadBatchProgressView(UploadBatchMixin, View):
    """The batch's analysis progress: an htmx partial that re-polls until done, or JSON."""

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        progress = progress_of(self.batch)
        if _wants_json(request):
            return JsonResponse({"batch": str(self.batch.pk), **progress.as_dict()})
        return render(
            request, "diagnosis/partials/upload_progress.html", {"batch": self.batch, "progress": progress}
        )


class CaseUploadProgressView(CaseAccessMixin, View):
    """The case page's "Uploads" card: recent batches with their progress, polled while running."""

    permission_required = "diagnosis.view_case"
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        return render(request, "diagnosis/partials/case_uploads.html", case_uploads_context(self.case))


class PatientFromDicomView(RoleRequiredMixin, View):
    """Fill the new-patient form from one DICOM file's patient tags; the technician confirms.

    The file is read for PatientID, PatientName, PatientBirthDate and PatientSex
    only and then discarded. Nothing is saved here: the prefilled form posts to the
    ordinary patient-create page.
    """

    permission_required = "diagnosis.add_patient"
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        return redirect("diagnosis:patient-create")

    def post(self, request: HttpRequest) -> HttpResponse:
        dicom_form = DicomPatientForm(request.POST, request.FILES)
        initial = {}
        existing = None
        if dicom_form.is_valid():
            initial = dicom_form.cleaned_data["dicom_file"]
            if initial.get("record_id"):
                existing = Patient.objects.filter(record_id__iexact=initial["record_id"]).first()
            missing = [
                str(Patient._meta.get_field(name).verbose_name)
                for name in ("record_id", "name", "birth_date", "sex")
                if name not in initial
            ]
            if existing is None:
                text = "Filled in from the DICOM file: check every field, then save to register the patient."
                if missing:
                    text += f" Not in the file: {', '.join(missing)}."
                messages.info(request, text)
        form = PatientForm(initial=initial)
        # The prefilled form is saved by the ordinary create page, not by this view.
        form.helper.form_action = reverse("diagnosis:patient-create")
        return render(
            request,
            "diagnosis/patient_form.html",
            {
                "form": form,
                "dicom_form": dicom_form if dicom_form.errors else DicomPatientForm(),
                "existing_patient": existing,
                "from_dicom": dicom_form.is_valid(),
            },
        )


# ---------------------------------------------------------------------------
# Reviews
# ---------------------------------------------------------------------------
class ReviewCreateView(CaseAccessMixin, FormView):
    """The radiologist's sign-off. Gated by role as well as permission: it is a clinical act."""

    permission_required = "diagnosis.add_review"
    allowed_roles = (User.Role.RADIOLOGIST,)
    form_class = ReviewForm
    template_name = "diagnosis/review_form.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            case=self.case,
            scans=self.case.scans.all(),
            reviews=self.case.reviews.all(),
            analysis=self.analysis,
            **kwargs,
        )

    @cached_property
    def analysis(self) -> CaseAnalysis:
        return case_analysis(self.case)

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "has_ai_result": self.analysis.has_results}

    def form_valid(self, form: ReviewForm) -> HttpResponse:
        try:
            do_submit_review(case=self.case, user=self.request.user, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, "Review signed off.")
        return redirect(self.case)


# ---------------------------------------------------------------------------
# Automatic analysis
# ---------------------------------------------------------------------------
def _analysis_context(user: User, case: Case) -> dict:
    return {"analysis": case_analysis(case), "can_rerun": user.has_perm("diagnosis.rerun_analysis")}


def _tell_analysis_queued(request: HttpRequest, *, delayed: bool) -> None:
    if delayed:
        messages.warning(request, f"Analysis delayed. {ANALYSIS_DELAYED_MESSAGE}")
    else:
        messages.info(request, "Analysis queued: the results appear on the case page as they come in.")


class CaseAnalysisView(CaseAccessMixin, TemplateView):
    """The case page's analysis card on its own, polled by htmx while the analysis runs.

    Once nothing is outstanding, an htmx request also gets ``HX-Refresh`` so the
    whole page reloads: the case status, history and review button change too.
    """

    permission_required = "diagnosis.view_case"
    template_name = "diagnosis/partials/case_results.html"
    http_method_names = ["get", "head"]

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            case=self.case, live=True, **_analysis_context(self.request.user, self.case), **kwargs
        )

    def render_to_response(self, context, **response_kwargs) -> HttpResponse:
        response = super().render_to_response(context, **response_kwargs)
        if self.request.htmx and not context["analysis"].in_progress:
            response["HX-Refresh"] = "true"
        patch_cache_control(response, no_store=True, private=True)
        return response


class AnalysisRerunView(CaseAccessMixin, View):
    """Analyse every scan of the case again (radiologists and administrators), e.g. after
    a model update. The earlier results stay in the case's history."""

    permission_required = "diagnosis.rerun_analysis"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk) -> HttpResponse:
        try:
            outcome = do_rerun_analysis(case=self.case, user=request.user)
        except ServiceError as exc:
            messages.error(request, str(exc))
        else:
            if outcome.analysis_delayed:
                messages.warning(request, f"Analysis delayed. {ANALYSIS_DELAYED_MESSAGE}")
            else:
                messages.success(request, "The analysis runs again; the earlier results stay in the history.")
        return redirect(self.case)
