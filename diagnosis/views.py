"""Pages of the diagnosis app. Views stay thin: check access, validate, call a service."""
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.cache import patch_cache_control
from django.views.generic import CreateView, DetailView, FormView, ListView, TemplateView, View
from django.views.generic.edit import UpdateView

from accounts.mixins import RoleRequiredMixin
from accounts.models import User
from diagnosis.access import CaseAccessMixin, cases_for, scans_for
from diagnosis.forms import (
    CaseFilterForm,
    CaseForm,
    PatientForm,
    PatientSearchForm,
    ReviewForm,
    ScanUploadForm,
)
from diagnosis.models import Case, Patient, Scan
from diagnosis.services import (
    ServiceError,
    do_add_scans,
    do_create_case,
    do_create_patient,
    do_submit_review,
    do_update_case,
    do_update_patient,
)

DASHBOARD_LIST_SIZE = 8


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
            case=self.case, scans=self.case.scans.all(), reviews=self.case.reviews.all(), **kwargs
        )

    def form_valid(self, form: ReviewForm) -> HttpResponse:
        try:
            do_submit_review(case=self.case, user=self.request.user, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, "Review signed off.")
        return redirect(self.case)

