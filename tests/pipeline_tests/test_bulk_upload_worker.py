"""A bulk upload of a 200-slice study, analysed by a real Celery worker through a real Redis.

Uses the pipeline's integration fixtures (tests/pipeline_tests/conftest.py). The first
test runs the worker with the stub predictor, so it needs no trained model and shows
the bulk path end to end (HTTP upload, queueing after commit, a worker process, the
results in the shared database and the batch's progress). The second uses the
shipped model and is skipped until one exists.
"""
from pathlib import Path

import pytest
from django.urls import reverse

from diagnosis.models import Case, Prediction, UploadBatch
from diagnosis.progress import progress_of
from diagnosis.services import do_create_case
from tests.factories import dicom_study, make_patient, upload, zip_bytes
from tests.pipeline_tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("worker_logs")

STUB_PREDICTOR = "tests.resources.stub_predictor.get_stub_predictor"


@pytest.fixture
def real_model(settings, tmp_path) -> Path:
    """Overrides the pipeline fixture: a stub run needs no trained model folder."""
    return Path(settings.MLCORE_MODEL_DIR)


@pytest.fixture
def study_case(alice, bob) -> Case:
    patient = make_patient(record_id="MRN-77", name="Jane Doe", created_by=alice)
    return do_create_case(patient=patient, user=alice, clinical_question="Staging study.", assigned_radiologist=bob)


def upload_study(client, case, slices: int) -> UploadBatch:
    response = client.post(
        reverse("diagnosis:bulk-upload", kwargs={"pk": case.pk}),
        {"files": [upload("study.zip", zip_bytes(dicom_study(slices)), "application/zip")]},
    )
    assert response.status_code == 302
    return UploadBatch.objects.get(case=case)


def analysed(batch: UploadBatch, timeout: float):
    return wait_for(lambda: (p := progress_of(batch)).finished and p, timeout=timeout, what="the batch to be analysed")


def test_a_200_slice_zip_is_analysed_by_a_real_worker(client_for, alice, study_case, use_broker, start_worker):
    start_worker("w1", MLCORE_PREDICTOR=STUB_PREDICTOR)

    batch = upload_study(client_for(alice), study_case, 200)

    assert batch.accepted_count == 200
    progress = analysed(batch, timeout=120)
    assert (progress.done, progress.failed) == (200, 0)
    rows = Prediction.objects.filter(scan__upload_batch=batch)
    assert rows.count() == 400 and {row.status for row in rows} == {Prediction.Status.SUCCESS}
    assert {row.worker.split("@")[0] for row in rows} == {"w1"}
    study_case.refresh_from_db()
    assert study_case.status == Case.Status.AWAITING_REVIEW
    progress_json = client_for(alice).get(
        reverse("diagnosis:upload-progress", kwargs={"pk": batch.pk}), headers={"Accept": "application/json"}
    ).json()
    assert progress_json["done"] == 200 and progress_json["finished"]


@pytest.mark.slow
def test_a_200_slice_zip_is_analysed_by_the_shipped_model(client_for, alice, study_case, use_broker, start_worker, settings):
    if not (Path(settings.MLCORE_MODEL_DIR) / "model_card.json").is_file():
        pytest.skip(f"no trained model at {settings.MLCORE_MODEL_DIR} (set MLCORE_MODEL_DIR)")
    start_worker("w1")

    batch = upload_study(client_for(alice), study_case, 200)

    progress = analysed(batch, timeout=900)
    assert (progress.done, progress.failed) == (200, 0)
    assert Prediction.objects.filter(scan__upload_batch=batch, status=Prediction.Status.SUCCESS).count() == 400
