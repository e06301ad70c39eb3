"""The radiologist's sign-off."""
import pytest
from django.urls import reverse

from diagnosis.models import Case, CaseEvent, Review
from diagnosis.services import ServiceError, do_submit_review
from tests.factories import make_case, make_scan, run_analysis

VALID = {"final_label": "glioma", "ai_agreement": "no_ai_result", "findings": "Left frontal mass."}


def review_url(case) -> str:
    return reverse("diagnosis:review-create", kwargs={"pk": case.pk})


def test_it_works(client_for, bob, reviewable_case):
    response = client_for(bob).post(review_url(reviewable_case), VALID)

    assert response.status_code == 302
    assert response["Location"] == reviewable_case.get_absolute_url()
    review = reviewable_case.reviews.get()
    assert (review.final_label, review.signed_off_by, review.findings) == ("glioma", bob, "Left frontal mass.")
    reviewable_case.refresh_from_db()
    assert reviewable_case.status == Case.Status.REVIEWED


def test_signing_off_writes_history(client_for, bob, reviewable_case):
    client_for(bob).post(review_url(reviewable_case), VALID)

    reviewed = reviewable_case.events.get(kind=CaseEvent.Kind.REVIEWED)
    assert reviewed.actor == bob
    assert reviewed.message == "Signed off: Glioma. No AI result to compare."
    change = reviewable_case.events.filter(kind=CaseEvent.Kind.STATUS_CHANGED).first()
    assert (change.to_status, change.actor) == (Case.Status.REVIEWED, bob)


def test_the_review_page_shows_the_scans(client_for, bob, reviewable_case):
    response = client_for(bob).get(review_url(reviewable_case))
    scan = reviewable_case.scans.get()
    assert scan.get_thumbnail_url() in response.content.decode()


def test_a_draft_case_without_scans_cannot_be_signed_off(client_for, bob, case):
    response = client_for(bob).post(review_url(case), VALID)

    assert response.status_code == 200
    assert "it can be reviewed once its scans are ready" in response.content.decode()
    assert not Review.objects.exists()
    case.refresh_from_db()
    assert case.status == Case.Status.DRAFT


def test_missing_findings_are_asked_for(client_for, bob, reviewable_case):
    response = client_for(bob).post(review_url(reviewable_case), {**VALID, "findings": ""})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Review.objects.exists()


def test_an_unassigned_case_goes_to_the_radiologist_who_reviews_it(client_for, charlie, alice):
    case = make_case(created_by=alice)
    make_scan(case, uploaded_by=alice)
    run_analysis(case)

    client_for(charlie).post(review_url(case), VALID)

    case.refresh_from_db()
    assert case.assigned_radiologist == charlie
    assert case.events.filter(kind=CaseEvent.Kind.ASSIGNED, actor=charlie).exists()


def test_a_second_review_is_an_addendum_and_keeps_the_first(client_for, bob, reviewable_case):
    client = client_for(bob)
    client.post(review_url(reviewable_case), VALID)
    client.post(review_url(reviewable_case), {**VALID, "final_label": "meningioma"})

    labels = list(reviewable_case.reviews.order_by("signed_off_at").values_list("final_label", flat=True))
    assert labels == ["glioma", "meningioma"]
    assert reviewable_case.latest_review.final_label == "meningioma"
    assert reviewable_case.events.filter(kind=CaseEvent.Kind.REVIEWED).count() == 2


def test_technician_cannot_sign_off_through_the_service_either(alice, reviewable_case):
    with pytest.raises(ServiceError, match="Only radiologists"):
        do_submit_review(case=reviewable_case, user=alice, **VALID)


def test_a_radiologist_cannot_sign_off_a_case_assigned_to_a_colleague(charlie, reviewable_case):
    with pytest.raises(ServiceError, match="assigned to Bob Rossi"):
        do_submit_review(case=reviewable_case, user=charlie, **VALID)


def test_a_failed_analysis_does_not_stop_a_human_review(bob, reviewable_case):
    reviewable_case.update_status(Case.Status.QUEUED)
    reviewable_case.update_status(Case.Status.FAILED)
    do_submit_review(case=reviewable_case, user=bob, **VALID)
    reviewable_case.refresh_from_db()
    assert reviewable_case.status == Case.Status.REVIEWED
