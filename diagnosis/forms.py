from crispy_forms.helper import FormHelper
from crispy_forms.layout import Column, Layout, Row, Submit
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from accounts.forms import CrispyFormMixin
from accounts.models import User
from diagnosis.models import Case, Patient, Review, UploadBatch
from diagnosis.validators import ValidatedScan, read_dicom_patient, validate_scan_file


def active_radiologists() -> QuerySet[User]:
    return User.objects.filter(role=User.Role.RADIOLOGIST, is_active=True).order_by(
        "last_name", "username"
    )


class RadiologistChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: User) -> str:
        return obj.get_full_name() or obj.username


class PatientForm(CrispyFormMixin, forms.ModelForm):
    submit_label = "Save patient"

    class Meta:
        model = Patient
        fields = ("record_id", "name", "birth_date", "sex")
        widgets = {"birth_date": forms.DateInput(attrs={"type": "date"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper.layout = Layout(
            Row(Column("record_id", css_class="col-md-4"), Column("name", css_class="col-md-8")),
            Row(Column("birth_date", css_class="col-md-4"), Column("sex", css_class="col-md-4")),
        )


class CaseForm(CrispyFormMixin, forms.ModelForm):
    submit_label = "Save case"
    assigned_radiologist = RadiologistChoiceField(
        queryset=User.objects.none(),
        required=False,
        empty_label="Any radiologist (shared worklist)",
        help_text=Case._meta.get_field("assigned_radiologist").help_text,
    )

    class Meta:
        model = Case
        fields = ("patient", "clinical_question", "notes", "assigned_radiologist")
        widgets = {
            "clinical_question": forms.Textarea(attrs={"rows": 3}),
            "notes": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assigned_radiologist"].queryset = active_radiologists()
        if not self.instance._state.adding:
            # A case stays with its patient; open a new case for another patient.
            del self.fields["patient"]


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.Field):
    """A list of uploaded files. Checks per file are left to the form, so that one bad
    file gets its own message instead of failing the whole field."""

    widget = MultipleFileInput

    def to_python(self, value) -> list:
        return list(value or [])


class ScanUploadForm(forms.Form):
    """One or many PNG/JPEG files. Each file is validated on its own."""

    images = MultipleFileField(
        label="Scan images",
        required=False,
        widget=MultipleFileInput(attrs={"accept": "image/png,image/jpeg", "multiple": True}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["images"].help_text = (
            f"Select one or many PNG or JPEG files, up to {settings.DIAGNOSIS_MAX_SCAN_MB} MB "
            f"each and {settings.DIAGNOSIS_MAX_FILES_PER_UPLOAD} per upload."
        )
        self.accepted: list[ValidatedScan] = []
        self.rejected: list[ValidationError] = []
        self.helper = FormHelper()
        self.helper.form_tag = False

    def clean_images(self) -> list[ValidatedScan]:
        files = self.cleaned_data["images"]
        if not files:
            raise ValidationError("Choose at least one image file.", code="required")
        if len(files) > settings.DIAGNOSIS_MAX_FILES_PER_UPLOAD:
            raise ValidationError(
                f"{len(files)} files selected; upload at most "
                f"{settings.DIAGNOSIS_MAX_FILES_PER_UPLOAD} at a time.",
                code="too_many_files",
            )
        for file in files:
            try:
                self.accepted.append(validate_scan_file(file))
            except ValidationError as exc:
                self.rejected.append(exc)
        if not self.accepted:
            # Nothing usable: show every file's reason on the form.
            raise ValidationError(self.rejected)
        return self.accepted

    @property
    def rejected_messages(self) -> list[str]:
        return [message for error in self.rejected for message in error.messages]


# What the bulk upload's file pickers offer; files are told apart by their bytes, not these.
BULK_ACCEPT = "image/png,image/jpeg,.png,.jpg,.jpeg,.dcm,.dicom,.ima,application/dicom,.zip,application/zip"


class BulkUploadForm(forms.Form):
    """The non-file fields of a bulk upload request; the files are read by the view.

    A large study arrives in several requests (the page sends a few dozen files at a
    time); the first creates the batch and the later ones name it in ``batch``.
    """

    batch = forms.UUIDField(required=False, widget=forms.HiddenInput)
    accept_other_patient = forms.BooleanField(
        required=False,
        label="DICOM patient ID may differ from this case's patient",
        help_text="For anonymised exports. Otherwise a DICOM file that names another patient "
        "is refused, so a study is never filed under the wrong patient.",
    )
    finish = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, case: Case, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.case = case
        self.user = user

    def clean_batch(self) -> UploadBatch | None:
        batch_id = self.cleaned_data["batch"]
        if batch_id is None:
            return None
        # Only a batch this user is still sending into this case; anything else is refused
        # rather than created anew, so a stale page cannot scatter a study over batches.
        batch = UploadBatch.objects.filter(
            pk=batch_id, case=self.case, uploaded_by=self.user, finished_at__isnull=True
        ).first()
        if batch is None:
            raise ValidationError("This upload has already finished; start a new one.", code="batch")
        return batch


class DicomPatientForm(forms.Form):
    """One DICOM file whose patient tags fill in the new-patient form."""

    dicom_file = forms.FileField(
        label="DICOM file of the study",
        help_text="Only the patient ID, name, birth date and sex are read; the file is not kept.",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".dcm,.dicom,.ima,application/dicom", "class": "form-control form-control-sm"}
        ),
    )

    def clean_dicom_file(self) -> dict:
        return read_dicom_patient(self.cleaned_data["dicom_file"])


class ReviewForm(CrispyFormMixin, forms.ModelForm):
    submit_label = "Sign off review"

    class Meta:
        model = Review
        fields = ("final_label", "ai_agreement", "findings")
        widgets = {
            "findings": forms.Textarea(attrs={"rows": 6}),
            "ai_agreement": forms.RadioSelect,
        }

    def __init__(self, *args, has_ai_result: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # A radio list needs no empty "---------" choice.
        self.fields["ai_agreement"].choices = Review.Agreement.choices
        # With an AI result on the case the radiologist must say how they relate;
        # without one there is nothing to compare.
        if not has_ai_result:
            self.fields["ai_agreement"].initial = Review.Agreement.NO_AI_RESULT
        self.helper.inputs[0].field_classes = "btn btn-success"


class PatientSearchForm(forms.Form):
    q = forms.CharField(required=False, label="Search")


class CaseFilterForm(forms.Form):
    """The filters of the case list; every field is optional."""

    q = forms.CharField(required=False, label="Search")
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *Case.Status.choices]
    )
    patient = forms.ModelChoiceField(
        queryset=Patient.objects.none(), required=False, empty_label="Any patient"
    )
    radiologist = RadiologistChoiceField(
        queryset=User.objects.none(), required=False, empty_label="Any radiologist"
    )
    created_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, cases: QuerySet[Case], **kwargs):
        super().__init__(*args, **kwargs)
        # Only patients the user has cases for: the filter must not list others.
        self.fields["patient"].queryset = Patient.objects.filter(
            pk__in=cases.values("patient")
        ).order_by("name")
        self.fields["radiologist"].queryset = active_radiologists()
        for field in self.fields.values():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs.setdefault("class", css)

    def filter(self, cases: QuerySet[Case]) -> QuerySet[Case]:
        if not self.is_valid():
            return cases
        data = self.cleaned_data
        if q := data["q"].strip():
            cases = cases.filter(
                Q(patient__name__icontains=q)
                | Q(patient__record_id__icontains=q)
                | Q(clinical_question__icontains=q)
                | Q(id__istartswith=q)
            )
        if data["status"]:
            cases = cases.filter(status=data["status"])
        if data["patient"]:
            cases = cases.filter(patient=data["patient"])
        if data["radiologist"]:
            cases = cases.filter(assigned_radiologist=data["radiologist"])
        if data["created_from"]:
            cases = cases.filter(created__date__gte=data["created_from"])
        if data["created_to"]:
            cases = cases.filter(created__date__lte=data["created_to"])
        return cases
