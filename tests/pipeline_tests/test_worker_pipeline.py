"""The analysis pipeline for real: Redis, Celery worker processes and the shipped model.

No eager mode here. Uploads go through the web layer (Django's test client, in
this process), are published to a real Redis after commit, and a ``celery
worker`` subprocess running the production settings analyses real MRI slices
with the trained Xception and writes the results into the shared test database.
"""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import Case, CaseEvent, Prediction
from tests.pipeline_tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker_logs")]

ANALYSIS_TIMEOUT_S = 240


def uploads(paths) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg") for path in paths]


def upload(client, case, paths):
    url = reverse("diagnosis:scan-upload", kwargs={"pk": case.pk})
    return client.post(url, {"images": uploads(paths)}, follow=True)


def status_of(case) -> str:
    case.refresh_from_db(fields=["status"])
    return case.status


def wait_until_analysed(case, timeout: float = ANALYSIS_TIMEOUT_S) -> str:
    return wait_for(
        lambda: status_of(case) in (Case.Status.AWAITING_REVIEW, Case.Status.FAILED) and case.status,
        timeout=timeout,
        what=f"case {case.short_id} to be analysed",
    )


def test_uploaded_scans_are_analysed_by_a_real_worker_and_shown_on_the_case_page(
    client_for, alice, case, use_broker, start_worker, mri_slices, real_model
):
    start_worker("w1")
    slices = mri_slices(3)  # a glioma, a normal and a meningioma slice
    client = client_for(alice)

    response = upload(client, case, slices)

    assert "3 scans uploaded." in response.content.decode()
    assert "Analysis queued" in response.content.decode()
    assert wait_until_analysed(case) == Case.Status.AWAITING_REVIEW

    card = json.loads((real_model / "model_card.json").read_text())
    rows = Prediction.objects.filter(run__case=case).select_related("scan")
    assert rows.count() == 6 and {row.status for row in rows} == {Prediction.Status.SUCCESS}
    for row in rows:
        assert (row.model_name, row.model_version, row.model_sha256) == (
            card["name"], card["version"], card["weights_sha256"],
        )
        assert row.worker.startswith("w1@") and row.attempts == 1
        assert row.seconds is not None and row.started_at <= row.completed_at
        assert abs(sum(row.probabilities.values()) - 1) < 1e-3
    presence = {row.scan.original_name: row for row in rows if row.stage == Prediction.Stage.PRESENCE}
    kinds = {row.scan.original_name: row for row in rows if row.stage == Prediction.Stage.TYPE}
    assert set(presence["Tr-glTr_0000.jpg"].probabilities) == {"normal", "tumor"}
    assert set(kinds["Tr-glTr_0000.jpg"].probabilities) == {"glioma", "meningioma", "normal", "pituitary"}
    # The shipped model reads these training slices right, so the images reached
    # it whole and in the right orientation and scale.
    assert presence["Tr-glTr_0000.jpg"].label == "tumor"
    assert presence["Tr-noTr_0000.jpg"].label == "normal"
    assert kinds["Tr-glTr_0000.jpg"].label == "glioma"

    kinds_of_events = list(case.events.order_by("created").values_list("kind", flat=True))
    assert kinds_of_events[-6:] == [
        "analysis_queued", "status_changed", "analysis_started", "status_changed",
        "analysis_finished", "status_changed",
    ]

    page = client.get(case.get_absolute_url()).content.decode()
    assert 'data-stage="presence" data-status="success"' in page
    assert 'data-stage="type" data-status="success"' in page
    assert f"{card['name']} {card['version']}" in page
    assert "Glioma" in page and "No tumour" in page

    health = client.get(reverse("health"))
    assert health.status_code == 200, health.content
    assert health.json()["checks"]["workers"]["count"] == 1


def test_a_worker_killed_mid_batch_is_replaced_and_the_scans_get_exactly_one_result_each(
    client_for, alice, case, use_broker, start_worker, mri_slices
):
    # Short visibility timeout: Redis hands a dead worker's message to another
    # worker after 5 s instead of 35 minutes. Small batches: many claims to interrupt.
    fast_redelivery = {"CELERY_VISIBILITY_TIMEOUT": "5", "ANALYSIS_BATCH_SIZE": "4"}
    first = start_worker("w1", **fast_redelivery)
    slices = mri_slices(36)

    upload(client_for(alice), case, slices)
    run = case.analysis_runs.get()
    wait_for(
        lambda: run.predictions.filter(status=Prediction.Status.STARTED).exists(),
        timeout=ANALYSIS_TIMEOUT_S, interval=0.05, what="the worker to claim scans",
    )
    first.kill()

    presence = run.predictions.filter(stage=Prediction.Stage.PRESENCE)
    interrupted = list(presence.filter(status=Prediction.Status.STARTED).values_list("pk", flat=True))
    assert interrupted, "the worker finished before it was killed"
    assert presence.exclude(status=Prediction.Status.SUCCESS).exists()

    start_worker("w2", **fast_redelivery)
    assert wait_until_analysed(case) == Case.Status.AWAITING_REVIEW

    rows = run.predictions.all()
    assert rows.count() == 72  # 36 scans x 2 stages, nothing added by the second delivery
    assert set(rows.values_list("status", flat=True)) == {Prediction.Status.SUCCESS}
    assert sorted(rows.values_list("scan_id", "stage").distinct()) == sorted(
        (scan.pk, stage) for scan in case.scans.all() for stage in Prediction.Stage
    )
    # The rows the dead worker held were finished by the redelivered message
    # (same task id), on the new worker, on their second claim.
    resumed = Prediction.objects.filter(pk__in=interrupted)
    assert {(row.attempts, row.worker.split("@")[0]) for row in resumed} == {(2, "w2")}
    assert len(set(presence.values_list("task_id", flat=True))) == 1
    assert case.events.filter(kind=CaseEvent.Kind.ANALYSIS_STARTED).count() == 1
    assert case.events.filter(kind=CaseEvent.Kind.ANALYSIS_FINISHED).count() == 1


def test_with_the_broker_down_uploads_are_kept_and_analysed_once_it_is_back(
    client_for, alice, case, use_broker, start_worker, mri_slices
):
    # A running worker with beat sweeping every 2 s, as runportal runs them.
    start_worker("w1", beat=True, ANALYSIS_SWEEP_SECONDS="2")
    use_broker.stop()

    response = upload(client_for(alice), case, mri_slices(2))

    text = response.content.decode()
    assert "2 scans uploaded." in text
    assert "Analysis delayed. The analysis service could not be reached." in text
    assert case.scans.count() == 2
    run = case.analysis_runs.get()
    assert run.enqueued_at is None
    assert set(run.predictions.values_list("status", flat=True)) == {Prediction.Status.PENDING}
    assert case.events.filter(kind=CaseEvent.Kind.ANALYSIS_DELAYED).exists()
    assert status_of(case) == Case.Status.QUEUED

    use_broker.start()  # same socket and data folder: the worker and beat reconnect

    assert wait_until_analysed(case) == Case.Status.AWAITING_REVIEW
    assert set(run.predictions.values_list("status", flat=True)) == {Prediction.Status.SUCCESS}
    run.refresh_from_db()
    assert run.enqueued_at is not None
