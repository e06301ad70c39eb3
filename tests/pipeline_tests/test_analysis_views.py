"""The analysis on the web: upload messages, the case page's results and progress,
the re-run action, and what happens when the broker is down (fast, in-process)."""
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import AnalysisRun, Case, CaseEvent, Prediction
from diagnosis.tasks import sweep_pending_analyses
from portal.celery import app as celery_app
from tests.factories import make_scan, png_upload, run_analysis


def case_url(case) -> str:
    return reverse("diagnosis:case-detail", kwargs={"pk": case.pk})


def analysis_url(case) -> str:
    return reverse("diagnosis:case-analysis", kwargs={"pk": case.pk})


def rerun_url(case) -> str:
    return reverse("diagnosis:analysis-rerun", kwargs={"pk": case.pk})


def upload_url(case) -> str:
    return reverse("diagnosis:scan-upload", kwargs={"pk": case.pk})


@pytest.fixture
def broker_down(monkeypatch):
    """Publish for real, to tests.settings' broker socket, which does not exist."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


# ---------------------------------------------------------------------------
# The case page
# ---------------------------------------------------------------------------
def test_the_case_page_shows_each_scans_results(client_for, alice, reviewable_case):
    response = client_for(alice).get(case_url(reviewable_case))

    text = response.content.decode()
    assert response.status_code == 200
    assert 'data-stage="presence" data-status="success"' in text
    assert 'data-label="tumor"' in text and "Tumour" in text
    assert 'data-label="glioma"' in text and "Glioma" in text
    assert "92.0%" in text and "81.0%" in text  # probability bars
    assert "stub-xception 0.0-test" in text
    assert "hx-trigger" not in text  # nothing to poll for


def test_while_the_analysis_runs_the_page_polls_for_progress(client_for, alice, case):
    make_scan(case, uploaded_by=alice)
    # on_commit callbacks do not run in this test's transaction: say it was published.
    AnalysisRun.objects.update(enqueued_at=timezone.now())

    text = client_for(alice).get(case_url(case)).content.decode()

    assert f'hx-get="{analysis_url(case)}"' in text and 'hx-trigger="every 2s"' in text
    assert "0 of 2 results" in text


def test_the_progress_partial_asks_for_a_reload_once_done(client_for, alice, case):
    make_scan(case, uploaded_by=alice)
    client = client_for(alice)

    running = client.get(analysis_url(case), headers={"HX-Request": "true"})
    assert running.status_code == 200 and "HX-Refresh" not in running
    assert "<html" not in running.content.decode()  # just the card

    run_analysis(case)
    done = client.get(analysis_url(case), headers={"HX-Request": "true"})
    assert done["HX-Refresh"] == "true"
    assert 'data-status="success"' in done.content.decode()


def test_the_progress_partial_checks_ownership(client_for, dave, case, alice):
    make_scan(case, uploaded_by=alice)
    assert client_for(dave).get(analysis_url(case)).status_code == 404


def test_a_failed_scan_shows_its_reason(client_for, alice, case, media_root):
    scan = make_scan(case, uploaded_by=alice)
    (media_root / scan.image.name).write_bytes(b"garbage")
    run_analysis(case)

    text = client_for(alice).get(case_url(case)).content.decode()

    assert "The image could not be read" in text
    assert case.status == Case.Status.FAILED


def test_the_review_form_asks_how_the_radiologist_relates_to_the_ai_result(client_for, bob, reviewable_case, alice, case):
    form = client_for(bob).get(reverse("diagnosis:review-create", kwargs={"pk": reviewable_case.pk})).context["form"]
    assert form.fields["ai_agreement"].initial is None


# ---------------------------------------------------------------------------
# Re-run
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["bob", "admin_user"])
def test_radiologists_and_admins_can_rerun_and_the_old_results_stay(request, client_for, reviewable_case, user, django_capture_on_commit_callbacks):
    first_run = reviewable_case.analysis_runs.get()
    old = list(first_run.predictions.values_list("pk", "status", "label"))

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(request.getfixturevalue(user)).post(rerun_url(reviewable_case), follow=True)

    assert "The analysis runs again" in response.content.decode()
    runs = list(reviewable_case.analysis_runs.order_by("created"))
    assert len(runs) == 2 and runs[1].reason == AnalysisRun.Reason.RERUN
    assert list(first_run.predictions.values_list("pk", "status", "label")) == old
    assert runs[1].predictions.filter(status="success").count() == 2
    reviewable_case.refresh_from_db()
    assert reviewable_case.status == Case.Status.AWAITING_REVIEW
    queued = reviewable_case.events.filter(kind=CaseEvent.Kind.ANALYSIS_QUEUED).first()
    assert queued.message == "Re-run of the analysis requested for 1 scan."


def test_the_case_page_lists_earlier_analyses_after_a_rerun(client_for, bob, reviewable_case, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client_for(bob).post(rerun_url(reviewable_case))
    text = client_for(bob).get(case_url(reviewable_case)).content.decode()
    assert "Earlier analyses (1)" in text


def test_technicians_cannot_rerun(client_for, alice, reviewable_case):
    assert client_for(alice).post(rerun_url(reviewable_case)).status_code == 403
    assert reviewable_case.analysis_runs.count() == 1


def test_rerun_checks_ownership(client_for, charlie, reviewable_case):
    assert client_for(charlie).post(rerun_url(reviewable_case)).status_code == 404


def test_rerun_rejects_get(client_for, bob, reviewable_case):
    assert client_for(bob).get(rerun_url(reviewable_case)).status_code == 405


def test_rerun_is_refused_while_an_analysis_is_running(client_for, bob, case, alice):
    make_scan(case, uploaded_by=alice)
    response = client_for(bob).post(rerun_url(case), follow=True)
    assert "An analysis of this case is already in progress." in response.content.decode()
    assert case.analysis_runs.count() == 1


def test_the_rerun_button_is_shown_to_those_who_may_use_it(client_for, alice, bob, reviewable_case):
    assert rerun_url(reviewable_case) in client_for(bob).get(case_url(reviewable_case)).content.decode()
    assert rerun_url(reviewable_case) not in client_for(alice).get(case_url(reviewable_case)).content.decode()


# ---------------------------------------------------------------------------
# Broker down: the upload is kept, the user is told, the sweep catches up
# ---------------------------------------------------------------------------
def test_an_upload_says_the_analysis_is_queued(client_for, alice, case, transactional_db):
    response = client_for(alice).post(upload_url(case), {"images": [png_upload()]}, follow=True)
    assert "Analysis queued" in response.content.decode()


def test_with_the_broker_down_the_upload_is_saved_and_the_user_told(client_for, alice, case, broker_down, transactional_db):
    response = client_for(alice).post(upload_url(case), {"images": [png_upload("a.png")]}, follow=True)

    text = response.content.decode()
    assert "1 scan uploaded." in text
    assert "Analysis delayed. The analysis service could not be reached." in text
    assert "Analysis delayed." in text and 'data-analysis-state="running"' in text
    run = case.analysis_runs.get()
    assert run.enqueued_at is None
    assert set(run.predictions.values_list("status", flat=True)) == {"pending"}
    assert case.events.filter(kind=CaseEvent.Kind.ANALYSIS_DELAYED).count() == 1
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED


def test_the_sweep_hands_over_what_never_reached_the_broker(case, alice):
    make_scan(case, uploaded_by=alice)  # on_commit never ran: as if the broker was down
    assert case.analysis_runs.get().enqueued_at is None

    assert sweep_pending_analyses.delay().get() == 1

    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW
    assert Prediction.objects.filter(status="success").count() == 2


def test_the_sweep_leaves_recently_queued_work_alone_but_not_lost_messages(case, alice, settings):
    make_scan(case, uploaded_by=alice)
    run = case.analysis_runs.get()
    AnalysisRun.objects.filter(pk=run.pk).update(enqueued_at=timezone.now())
    assert sweep_pending_analyses.delay().get() == 0

    lost = timezone.now() - timedelta(seconds=settings.ANALYSIS_REQUEUE_AFTER + 1)
    AnalysisRun.objects.filter(pk=run.pk).update(enqueued_at=lost)
    assert sweep_pending_analyses.delay().get() == 1


def test_the_sweep_stops_at_the_first_broker_failure(case, alice, broker_down):
    make_scan(case, uploaded_by=alice)
    make_scan(case, uploaded_by=alice)
    from diagnosis.services import do_requeue_pending_analyses

    assert do_requeue_pending_analyses() == 0
    assert not AnalysisRun.objects.filter(enqueued_at__isnull=False).exists()


def test_the_sweep_is_scheduled(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-pending-analyses"]
    assert entry["task"] == sweep_pending_analyses.name
    assert entry["schedule"] == settings.ANALYSIS_SWEEP_SECONDS
