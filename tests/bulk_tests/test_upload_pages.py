"""The upload report, "My uploads", batch progress on the case page, and filling a patient from DICOM."""
import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import AnalysisRun, Patient, Prediction, UploadBatch
from diagnosis.progress import BatchProgress, progress_of
from tests.factories import make_dicom, png_upload, ramp, upload


@pytest.fixture
def batch(bulk_post, study_case) -> UploadBatch:
    """alice's finished batch of four PNG slices and one corrupt file."""
    bulk_post(*[png_upload(f"s{i}.png", seed=i) for i in range(4)], upload("bad.png", b"nope"))
    return UploadBatch.objects.get()


def set_analysis(batch: UploadBatch, statuses: list[tuple[str, str]]) -> None:
    """Give the batch's scans, in order, one new analysis run with the given (presence, type) statuses."""
    run = AnalysisRun.objects.create(case=batch.case)
    for scan, (presence, kind) in zip(batch.scans.order_by("original_name"), statuses):
        Prediction.objects.create(run=run, scan=scan, stage=Prediction.Stage.PRESENCE, status=presence)
        Prediction.objects.create(run=run, scan=scan, stage=Prediction.Stage.TYPE, status=kind)


S, F, P, R = Prediction.Status.SUCCESS, Prediction.Status.FAILURE, Prediction.Status.PENDING, Prediction.Status.STARTED


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------
def test_progress_counts_done_failed_and_running_scans(batch):
    AnalysisRun.objects.filter(case=batch.case).delete()  # whatever the upload queued
    set_analysis(batch, [(S, S), (S, F), (R, P), (P, P)])

    assert progress_of(batch) == BatchProgress(total=4, done=2, failed=1, running=1)
    assert progress_of(batch).waiting == 1 and not progress_of(batch).finished


def test_a_rerun_shows_progress_again_from_its_own_results(batch):
    AnalysisRun.objects.filter(case=batch.case).delete()
    set_analysis(batch, [(S, S)] * 4)
    assert progress_of(batch).finished and progress_of(batch).context == "success"

    later = AnalysisRun.objects.create(case=batch.case)
    later.created = timezone.now() + timezone.timedelta(seconds=1)
    later.save()
    scan = batch.scans.order_by("original_name").first()
    Prediction.objects.create(run=later, scan=scan, stage=Prediction.Stage.PRESENCE, status=P)
    assert progress_of(batch) == BatchProgress(total=4, done=3, failed=0, running=0)


def test_an_empty_batch_is_finished():
    progress = BatchProgress()
    assert progress.finished and progress.percent == 100


# ---------------------------------------------------------------------------
# Report page and progress endpoint
# ---------------------------------------------------------------------------
def test_the_report_lists_every_file_and_filters_by_outcome(client_for, alice, batch):
    page = client_for(alice).get(batch.get_absolute_url())
    assert page.status_code == 200
    text = page.content.decode()
    assert "s0.png" in text and "bad.png" in text and "is not a PNG, JPEG or DICOM file" in text

    rejected = client_for(alice).get(batch.get_absolute_url(), {"outcome": "rejected"}).content.decode()
    assert "bad.png" in rejected and "s0.png" not in rejected


@pytest.mark.parametrize(("user", "status"), [("bob", 200), ("charlie", 404), ("dave", 404), ("admin_user", 200)])
def test_the_report_checks_access_to_the_case(request, client_for, batch, user, status):
    client = client_for(request.getfixturevalue(user))
    assert client.get(batch.get_absolute_url()).status_code == status
    progress_url = reverse("diagnosis:upload-progress", kwargs={"pk": batch.pk})
    assert client.get(progress_url).status_code == status


def test_progress_polls_while_running_and_stops_when_done(client_for, alice, batch):
    AnalysisRun.objects.filter(case=batch.case).delete()
    set_analysis(batch, [(S, S), (S, S), (R, P), (P, P)])
    url = reverse("diagnosis:upload-progress", kwargs={"pk": batch.pk})
    client = client_for(alice)

    running = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "2 of 4" in running and 'hx-trigger="every 3s"' in running
    assert client.get(url, headers={"Accept": "application/json"}).json() == {
        "batch": str(batch.pk), "total": 4, "done": 2, "failed": 0, "running": 1, "waiting": 1,
        "finished": False, "percent": 50,
    }

    Prediction.objects.filter(status__in=(P, R)).update(status=F)
    done = client.get(url).content.decode()
    assert "4 of 4" in done and "2 failed" in done and "hx-trigger" not in done


# ---------------------------------------------------------------------------
# Case page and My uploads
# ---------------------------------------------------------------------------
def test_the_case_page_shows_the_uploads_and_their_progress(client_for, bob, batch):
    AnalysisRun.objects.filter(case=batch.case).delete()
    set_analysis(batch, [(S, S), (R, P), (P, P), (P, P)])
    page = client_for(bob).get(batch.case.get_absolute_url()).content.decode()
    assert 'id="case-uploads"' in page and "1 of 4" in page and "4 accepted" in page and "1 rejected" in page
    assert reverse("diagnosis:case-upload-progress", kwargs={"pk": batch.case.pk}) in page

    partial = client_for(bob).get(reverse("diagnosis:case-upload-progress", kwargs={"pk": batch.case.pk}))
    assert partial.status_code == 200 and "1 of 4" in partial.content.decode()


def test_the_case_uploads_card_checks_access(client_for, charlie, batch):
    url = reverse("diagnosis:case-upload-progress", kwargs={"pk": batch.case.pk})
    assert client_for(charlie).get(url).status_code == 404


def test_my_uploads_lists_only_my_batches(client_for, alice, admin_user, batch, bulk_post):
    bulk_post(png_upload("admin.png", seed=99), user=admin_user)
    mine = client_for(alice).get(reverse("diagnosis:upload-list"))
    assert mine.status_code == 200
    assert [b.pk for b, _ in mine.context["rows"]] == [batch.pk]
    theirs = client_for(admin_user).get(reverse("diagnosis:upload-list"))
    assert [b.uploaded_by for b, _ in theirs.context["rows"]] == [admin_user]


def test_my_uploads_polls_only_while_something_runs(client_for, alice, batch):
    AnalysisRun.objects.filter(case=batch.case).delete()
    set_analysis(batch, [(S, S), (S, S), (S, S), (R, P)])
    client = client_for(alice)
    partial = client.get(reverse("diagnosis:upload-list"), headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="upload-table"') and 'hx-trigger="every 3s"' in partial
    Prediction.objects.filter(status__in=(P, R)).update(status=S)
    partial = client.get(reverse("diagnosis:upload-list"), headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in partial and "4 of 4" in partial


@pytest.mark.parametrize(("user", "status"), [("alice", 200), ("admin_user", 200), ("bob", 403)])
def test_my_uploads_is_for_uploaders(request, client_for, user, status):
    assert client_for(request.getfixturevalue(user)).get(reverse("diagnosis:upload-list")).status_code == status


# ---------------------------------------------------------------------------
# A new patient from a DICOM file, confirmed by the technician
# ---------------------------------------------------------------------------
def test_a_dicom_file_fills_the_new_patient_form(client_for, alice):
    dicom = upload("IM0001.dcm", make_dicom(ramp(), patient=("MRN-5", "Roe^Richard", "19641231", "M")))
    response = client_for(alice).post(reverse("diagnosis:patient-from-dicom"), {"dicom_file": dicom})

    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["record_id"] == "MRN-5" and form.initial["name"] == "Roe Richard"
    assert str(form.initial["birth_date"]) == "1964-12-31" and form.initial["sex"] == "M"
    page = response.content.decode()
    assert f'action="{reverse("diagnosis:patient-create")}"' in page and "check every field" in page
    # Nothing is registered until the technician saves the form.
    assert not Patient.objects.exists()

    saved = client_for(alice).post(
        reverse("diagnosis:patient-create"),
        {"record_id": "MRN-5", "name": "Roe Richard", "birth_date": "1964-12-31", "sex": "M"},
    )
    assert saved.status_code == 302 and Patient.objects.get().created_by == alice


def test_an_already_registered_patient_is_pointed_to(client_for, alice, study_case):
    dicom = upload("IM0001.dcm", make_dicom(ramp()))  # names MRN-77, study_case's patient
    response = client_for(alice).post(reverse("diagnosis:patient-from-dicom"), {"dicom_file": dicom})
    assert response.context["existing_patient"] == study_case.patient
    assert "already registered" in response.content.decode()


def test_a_file_that_is_not_dicom_is_explained(client_for, alice):
    response = client_for(alice).post(reverse("diagnosis:patient-from-dicom"), {"dicom_file": png_upload("a.png")})
    assert "is not a readable DICOM file" in response.content.decode()
    assert not response.context["form"].initial


def test_only_those_who_register_patients_can_read_dicom_patients(client_for, bob):
    dicom = upload("IM0001.dcm", make_dicom(ramp()))
    assert client_for(bob).post(reverse("diagnosis:patient-from-dicom"), {"dicom_file": dicom}).status_code == 403


def test_the_new_patient_page_offers_the_dicom_reader(client_for, alice):
    page = client_for(alice).get(reverse("diagnosis:patient-create")).content.decode()
    assert 'id="dicom-patient-form"' in page


def test_the_case_page_shows_each_dicom_slice_with_its_series_and_number(client_for, alice, bulk_post, study_case):
    from tests.factories import dicom_study, zip_bytes

    bulk_post(upload("s.zip", zip_bytes(dicom_study(2))))
    page = client_for(alice).get(study_case.get_absolute_url()).content.decode()
    assert "T1 AX POST · #1" in page and "T1 AX POST · #2" in page
