"""The analysis tasks, run in-process: claims, idempotency, batching and failure mapping.

tests.settings runs Celery eagerly with a stub predictor (fixed answers, no
TensorFlow), so these exercise the real tasks and services in milliseconds. The
real worker, broker and model are in test_worker_pipeline.py.
"""
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError
from django.utils import timezone

import mlcore.tasks
from diagnosis import services
from diagnosis.models import AnalysisRun, Case, CaseEvent, Prediction
from diagnosis.services import do_add_scans
from diagnosis.validators import validate_scan_file
from mlcore.tasks import MAX_RETRIES, RETRY_BACKOFF_CAP_S, _retry_countdown, analyse_presence, analyse_type
from portal.celery import app as celery_app
from tests.factories import make_scan, png_upload, run_analysis
from tests.resources.stub_predictor import STUB

PRESENCE, TYPE = Prediction.Stage.PRESENCE, Prediction.Stage.TYPE


@pytest.fixture(autouse=True)
def stub():
    STUB.batch_sizes.clear()
    mlcore.tasks.clear_forward_cache()
    return STUB


@pytest.fixture
def queued_case(case, alice):
    """``case`` with two scans uploaded together; their analysis is queued but has not run."""
    files = [validate_scan_file(png_upload(name, seed=seed)) for name, seed in (("a.png", 1), ("b.png", 2))]
    do_add_scans(case=case, scans=files, user=alice)
    case.refresh_from_db()
    return case


def only_run(case) -> AnalysisRun:
    return case.analysis_runs.get()


def statuses(case) -> list[tuple[str, str, str]]:
    rows = Prediction.objects.filter(run__case=case).order_by("scan__original_name", "stage")
    return list(rows.values_list("scan__original_name", "stage", "status"))


def kinds(case) -> list[str]:
    return list(case.events.order_by("created").values_list("kind", flat=True))


def test_it_writes_both_stages_for_every_scan_and_sends_the_case_for_review(queued_case):
    case = run_analysis(queued_case)

    assert case.status == Case.Status.AWAITING_REVIEW
    assert statuses(case) == [
        ("a.png", "presence", "success"), ("a.png", "type", "success"),
        ("b.png", "presence", "success"), ("b.png", "type", "success"),
    ]
    presence = Prediction.objects.filter(run__case=case, stage=PRESENCE).first()
    assert presence.label == "tumor"
    assert presence.probabilities == {"normal": 0.08, "tumor": 0.92}
    assert (presence.model_name, presence.model_version, presence.model_sha256) == (
        "stub-xception", "0.0-test", "5" * 64,
    )
    assert presence.worker and presence.task_id and presence.attempts == 1
    assert presence.seconds >= 0 and presence.started_at <= presence.completed_at
    kind = Prediction.objects.filter(run__case=case, stage=TYPE).first()
    assert kind.label == "glioma"
    assert set(kind.probabilities) == {"glioma", "meningioma", "normal", "pituitary"}
    # Stage 2 reused stage 1's forward pass on this worker.
    assert kind.shared_forward_pass


def test_the_history_follows_the_analysis(queued_case):
    case = run_analysis(queued_case)

    assert kinds(case) == [
        "created", "assigned", "scan_uploaded", "scan_uploaded",
        "analysis_queued", "status_changed",
        "analysis_started", "status_changed",
        "analysis_finished", "status_changed",
    ]
    changes = case.events.filter(kind=CaseEvent.Kind.STATUS_CHANGED).order_by("created")
    assert [(e.from_status, e.to_status) for e in changes] == [
        ("draft", "queued"), ("queued", "processing"), ("processing", "awaiting_review"),
    ]
    started = case.events.get(kind=CaseEvent.Kind.ANALYSIS_STARTED)
    assert started.actor is None and "with stub-xception 0.0-test" in started.message
    finished = case.events.get(kind=CaseEvent.Kind.ANALYSIS_FINISHED)
    assert finished.message == "Analysis finished: 2 of 2 scans analysed with stub-xception 0.0-test."


def test_a_bulk_upload_is_one_run_with_batched_forward_passes(case, alice, settings, stub, django_capture_on_commit_callbacks):
    settings.ANALYSIS_BATCH_SIZE = 16
    # 160 px wide: the factory's disc takes 40 distinct positions, so no duplicates.
    files = [validate_scan_file(png_upload(f"slice{i:03}.png", seed=i, size=(160, 160))) for i in range(40)]
    with django_capture_on_commit_callbacks(execute=True):
        do_add_scans(case=case, scans=files, user=alice)

    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW
    assert case.analysis_runs.count() == 1
    # 40 slices: three forward passes for stage 1, none for stage 2 (same pass).
    assert stub.batch_sizes == [16, 16, 8]
    assert Prediction.objects.filter(run__case=case, status="success").count() == 80


def test_stage_two_runs_the_network_itself_when_stage_one_ran_elsewhere(queued_case, stub, monkeypatch):
    monkeypatch.setattr(mlcore.tasks, "_recall", lambda *args: None)

    case = run_analysis(queued_case)

    kind = Prediction.objects.filter(run__case=case, stage=TYPE).first()
    assert kind.succeeded and not kind.shared_forward_pass and kind.label == "glioma"
    assert stub.batch_sizes == [2, 2]  # one pass per stage


def test_running_a_task_again_changes_nothing(queued_case):
    case = run_analysis(queued_case)
    rows = {p.pk: (p.modified, p.attempts) for p in Prediction.objects.all()}
    events = case.events.count()

    for run in case.analysis_runs.all():
        analyse_presence.delay(run_pk=str(run.pk))
        analyse_type.delay(run_pk=str(run.pk))

    assert {p.pk: (p.modified, p.attempts) for p in Prediction.objects.all()} == rows
    assert case.events.count() == events
    assert Prediction.objects.count() == 4


def test_a_redelivered_message_resumes_what_it_had_claimed(case, alice):
    make_scan(case, uploaded_by=alice)
    run = only_run(case)
    presence = run.predictions.get(stage=PRESENCE)
    # The worker that received message "task-1" claimed the row, then died.
    services.claim_predictions(prediction_pks=[presence.pk], task_id="task-1", worker="dead@host")

    # Another message for the same run (say, from the sweep) must not take it over...
    analyse_presence.apply(kwargs={"run_pk": str(run.pk)}, task_id="task-2")
    presence.refresh_from_db()
    assert (presence.status, presence.task_id) == ("started", "task-1")
    assert run.predictions.get(stage=TYPE).status == "pending"  # stage 2 waits for stage 1

    # ...but the redelivered message keeps its id and finishes the job, once.
    analyse_presence.apply(kwargs={"run_pk": str(run.pk)}, task_id="task-1")
    presence.refresh_from_db()
    assert (presence.status, presence.attempts) == ("success", 2)
    assert run.predictions.get(stage=TYPE).status == "success"
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_a_claim_held_past_the_time_limit_is_taken_over(case, alice, settings):
    make_scan(case, uploaded_by=alice)
    run = only_run(case)
    presence = run.predictions.get(stage=PRESENCE)
    services.claim_predictions(prediction_pks=[presence.pk], task_id="lost", worker="gone@host")
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1)
    Prediction.objects.filter(pk=presence.pk).update(started_at=long_ago)

    analyse_presence.apply(kwargs={"run_pk": str(run.pk)}, task_id="new")

    presence.refresh_from_db()
    assert (presence.status, presence.task_id, presence.attempts) == ("success", "new", 2)


def test_two_workers_never_both_claim_a_row(case, alice):
    make_scan(case, uploaded_by=alice)
    pks = list(only_run(case).predictions.values_list("pk", flat=True))

    first = services.claim_predictions(prediction_pks=pks, task_id="one", worker="w1")
    second = services.claim_predictions(prediction_pks=pks, task_id="two", worker="w2")

    assert len(first) == 2 and second == []


def test_a_result_is_written_once(case, alice):
    make_scan(case, uploaded_by=alice)
    row = only_run(case).predictions.get(stage=PRESENCE)
    services.claim_predictions(prediction_pks=[row.pk], task_id="t", worker="w")
    outcome = services.StageOutcome(prediction_pk=row.pk, label="tumor", probabilities={"normal": 0.1, "tumor": 0.9}, seconds=0.1)
    model = services.ModelIdentity(name="m", version="1", sha256="0" * 64)

    assert services.do_record_predictions(outcomes=[outcome], task_id="t", model=model) == 1
    assert services.do_record_predictions(outcomes=[outcome], task_id="t", model=model) == 0
    assert services.do_record_predictions(outcomes=[outcome], task_id="other", model=model) == 0


def test_an_undecodable_scan_fails_alone_and_the_case_goes_on(queued_case, media_root):
    broken = queued_case.scans.get(original_name="b.png")
    (media_root / broken.image.name).write_bytes(b"not an image any more")

    case = run_analysis(queued_case)

    assert statuses(case) == [
        ("a.png", "presence", "success"), ("a.png", "type", "success"),
        ("b.png", "presence", "failure"), ("b.png", "type", "failure"),
    ]
    failed = Prediction.objects.filter(scan=broken)
    assert {p.error_message for p in failed} == {"The image could not be read (not a readable image (UnidentifiedImageError))."}
    assert case.status == Case.Status.AWAITING_REVIEW
    event = case.events.get(kind=CaseEvent.Kind.ANALYSIS_FAILED)
    assert event.scan == broken and "Could not analyse b.png: The image could not be read" in event.message


def test_a_missing_file_is_reported_as_such(queued_case, media_root):
    for scan in queued_case.scans.all():
        (media_root / scan.image.name).unlink()

    case = run_analysis(queued_case)

    assert set(Prediction.objects.values_list("error_message", flat=True)) == {"The image file is missing from storage."}
    assert case.status == Case.Status.FAILED
    change = case.events.filter(kind=CaseEvent.Kind.STATUS_CHANGED).order_by("-created").first()
    assert change.message == "Analysis failed: The image file is missing from storage."


def test_a_missing_model_fails_the_run_without_retrying(queued_case, settings, monkeypatch):
    from mlcore.inference import ModelIntegrityError

    def no_model(model_dir):
        raise ModelIntegrityError("no model card at /models/model_card.json")

    monkeypatch.setattr(mlcore.tasks, "import_string", lambda path: no_model)
    retries = []
    monkeypatch.setattr(analyse_presence, "retry", lambda **kwargs: retries.append(kwargs))

    case = run_analysis(queued_case)

    assert {p.status for p in Prediction.objects.all()} == {"failure"}
    assert set(Prediction.objects.values_list("error_message", flat=True)) == {
        "The analysis model could not be loaded: no model card at /models/model_card.json"
    }
    assert case.status == Case.Status.FAILED
    assert retries == []


@pytest.fixture
def eager_failures_stay_inside(monkeypatch):
    """Let eager Celery handle retries as a worker would, instead of raising them."""
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", False)


def test_a_locked_database_is_retried(queued_case, monkeypatch, eager_failures_stay_inside):
    real_claim = services.claim_predictions
    calls = []

    def locked_once(**kwargs):
        calls.append(kwargs["task_id"])
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real_claim(**kwargs)

    monkeypatch.setattr(services, "claim_predictions", locked_once)

    run_analysis(queued_case)

    assert queued_case.status == Case.Status.AWAITING_REVIEW
    assert calls[0] == calls[1]  # the retry is the same task: it may resume its claims


def test_a_database_that_stays_locked_is_given_up_after_the_cap(queued_case, monkeypatch, eager_failures_stay_inside):
    calls = []

    def always_locked(**kwargs):
        calls.append(1)
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "claim_predictions", always_locked)

    result = analyse_presence.apply(kwargs={"run_pk": str(only_run(queued_case).pk)})

    assert result.state == "FAILURE" and isinstance(result.result, OperationalError)
    assert len(calls) == MAX_RETRIES + 1
    # Nothing was claimed: the sweep hands the run over again later.
    assert {p.status for p in Prediction.objects.all()} == {"pending"}


def test_retry_backoff_grows_and_is_capped():
    assert _retry_countdown(0) <= 2
    assert all(_retry_countdown(n) <= RETRY_BACKOFF_CAP_S for n in range(20))
    assert _retry_countdown(10) >= RETRY_BACKOFF_CAP_S / 2


def test_other_database_errors_are_not_retried(case, alice, monkeypatch):
    make_scan(case, uploaded_by=alice)
    monkeypatch.setattr(services, "claim_predictions", lambda **kwargs: (_ for _ in ()).throw(OperationalError("no such table")))
    retries = []
    monkeypatch.setattr(analyse_presence, "retry", lambda **kwargs: retries.append(kwargs))
    with pytest.raises(OperationalError):
        analyse_presence.delay(run_pk=str(only_run(case).pk))
    assert retries == []


def test_the_soft_time_limit_is_recorded(queued_case, stub, monkeypatch):
    def too_slow(batch):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(stub, "predict_arrays", too_slow)

    case = run_analysis(queued_case)

    presence = Prediction.objects.filter(stage=PRESENCE)
    assert set(presence.values_list("error_message", flat=True)) == {"Time limit exceeded."}
    assert set(Prediction.objects.filter(stage=TYPE).values_list("error_message", flat=True)) == {
        "Not analysed: stage 1 could not analyse this scan."
    }
    assert case.status == Case.Status.FAILED


def test_an_unexpected_error_is_recorded_logged_and_raised(queued_case, stub, monkeypatch, caplog):
    def broken(batch):
        raise RuntimeError("tensor shapes disagree")

    monkeypatch.setattr(stub, "predict_arrays", broken)
    run = only_run(queued_case)

    with pytest.raises(RuntimeError, match="tensor shapes disagree"):
        analyse_presence.delay(run_pk=str(run.pk))

    assert set(run.predictions.filter(stage=PRESENCE).values_list("error_message", flat=True)) == {
        "An unexpected error occurred."
    }
    assert "tensor shapes disagree" in caplog.text  # the traceback is logged, not shown


def test_a_deleted_run_is_skipped(case, alice):
    make_scan(case, uploaded_by=alice)
    run_pk = str(only_run(case).pk)
    case.delete()
    analyse_presence.delay(run_pk=run_pk)  # nothing to do, nothing raised


def test_analysis_tasks_are_late_acknowledged_on_the_inference_queue():
    for task in (analyse_presence, analyse_type):
        assert task.acks_late and task.reject_on_worker_lost
        route = celery_app.amqp.router.route({}, task.name)
        assert route["queue"].name == "inference"
