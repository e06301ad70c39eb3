"""Opening, editing, listing and viewing cases."""
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from diagnosis.models import Case, CaseEvent
from tests.factories import make_case, make_patient, make_scan, make_user


def test_technician_opens_a_case_and_is_sent_to_upload_scans(client_for, alice, bob, patient):
    response = client_for(alice).post(
        reverse("diagnosis:case-create"),
        {"patient": patient.pk, "clinical_question": "Seizures; rule out tumour.", "assigned_radiologist": bob.pk},
    )

    case = Case.objects.get()
    assert response["Location"] == reverse("diagnosis:scan-upload", kwargs={"pk": case.pk})
    assert (case.patient, case.created_by, case.assigned_radiologist, case.status) == (
        patient, alice, bob, Case.Status.DRAFT,
    )
    kinds = set(case.events.values_list("kind", flat=True))
    assert kinds == {CaseEvent.Kind.CREATED, CaseEvent.Kind.ASSIGNED}


def test_new_case_form_preselects_the_patient(client_for, alice, patient):
    response = client_for(alice).get(reverse("diagnosis:case-create"), {"patient": str(patient.pk)})
    assert response.context["form"].initial["patient"] == patient


def test_new_case_form_ignores_a_malformed_patient_id(client_for, alice):
    response = client_for(alice).get(reverse("diagnosis:case-create"), {"patient": "not-a-uuid"})
    assert response.status_code == 200


def test_only_radiologists_can_be_assigned(client_for, alice, dave, patient):
    response = client_for(alice).post(
        reverse("diagnosis:case-create"),
        {"patient": patient.pk, "clinical_question": "Q", "assigned_radiologist": dave.pk},
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Case.objects.exists()


def test_editing_a_case_records_what_changed(client_for, alice, charlie, case):
    client_for(alice).post(
        reverse("diagnosis:case-update", kwargs={"pk": case.pk}),
        {"clinical_question": "New question", "notes": "", "assigned_radiologist": charlie.pk},
    )

    case.refresh_from_db()
    assert (case.clinical_question, case.assigned_radiologist) == ("New question", charlie)
    updated = case.events.get(kind=CaseEvent.Kind.UPDATED)
    assert updated.data == {"changed": ["clinical_question"]}
    # Newest first: the reassignment, then the original assignment to bob.
    assigned = case.events.filter(kind=CaseEvent.Kind.ASSIGNED).first()
    assert (assigned.message, assigned.actor) == (f"Assigned to {charlie}.", alice)


def test_case_edit_cannot_move_a_case_to_another_patient(client_for, alice, case):
    other = make_patient()
    client_for(alice).post(
        reverse("diagnosis:case-update", kwargs={"pk": case.pk}),
        {"patient": other.pk, "clinical_question": "Q", "notes": ""},
    )
    case.refresh_from_db()
    assert case.patient != other


def test_case_page_shows_scans_results_area_and_history(client_for, alice, reviewable_case):
    response = client_for(alice).get(reviewable_case.get_absolute_url())
    html = response.content.decode()

    scan = reviewable_case.scans.get()
    assert scan.get_thumbnail_url() in html
    assert scan.get_absolute_url() in html
    assert 'id="case-results"' in html
    assert "Case created" in html and "Scan uploaded" in html
    # The status badge colour comes from the model, not from the template.
    assert f"text-bg-{reviewable_case.status_context}" in html


def test_technician_sees_only_their_own_cases_in_the_list(client_for, alice, dave, case):
    theirs = make_case(created_by=dave)
    response = client_for(alice).get(reverse("diagnosis:case-list"))
    assert list(response.context["cases"]) == [case]
    assert theirs.short_id not in response.content.decode()


def test_case_list_filters(client_for, admin_user, alice, bob, charlie):
    p1, p2 = make_patient(name="Ann Alpha"), make_patient(name="Ben Beta")
    c1 = make_case(created_by=alice, patient=p1, assigned_radiologist=bob, status=Case.Status.AWAITING_REVIEW)
    c2 = make_case(created_by=alice, patient=p2, assigned_radiologist=charlie, status=Case.Status.REVIEWED)
    c3 = make_case(created_by=alice, patient=p2, clinical_question="Follow-up of meningioma")
    Case.objects.filter(pk=c3.pk).update(created=timezone.now() - timedelta(days=10))
    client = client_for(admin_user)

    def listed(**params):
        return set(client.get(reverse("diagnosis:case-list"), params).context["cases"])

    assert listed(status="awaiting_review") == {c1}
    assert listed(patient=p2.pk) == {c2, c3}
    assert listed(radiologist=charlie.pk) == {c2}
    assert listed(q="alpha") == {c1}
    assert listed(q="meningioma") == {c3}
    assert listed(q=c2.short_id) == {c2}
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert listed(created_from=since) == {c1, c2}
    assert listed(created_to=(timezone.now() - timedelta(days=5)).date().isoformat()) == {c3}


def test_case_list_paginates_and_keeps_filters_in_page_links(client_for, alice):
    for _ in range(25):
        make_case(created_by=alice, status=Case.Status.AWAITING_REVIEW)
    response = client_for(alice).get(reverse("diagnosis:case-list"), {"status": "awaiting_review"})
    assert len(response.context["cases"]) == 20
    assert "?status=awaiting_review&amp;page=2" in response.content.decode()


def test_case_list_patient_filter_lists_only_patients_of_visible_cases(client_for, alice, dave, case):
    hidden = make_case(created_by=dave)
    response = client_for(alice).get(reverse("diagnosis:case-list"))
    choices = list(response.context["filter_form"].fields["patient"].queryset)
    assert choices == [case.patient]
    assert hidden.patient.name not in response.content.decode()


def test_radiologist_dashboard_lists_cases_awaiting_their_review(client_for, bob, reviewable_case):
    response = client_for(bob).get(reverse("diagnosis:dashboard"))
    assert list(response.context["awaiting_review"]) == [reviewable_case]
    assert list(response.context["my_open_cases"]) == [reviewable_case]


def test_dashboard_shows_recent_failures(client_for, alice, case):
    case.update_status(Case.Status.QUEUED)
    case.update_status(Case.Status.FAILED)
    response = client_for(alice).get(reverse("diagnosis:dashboard"))
    assert list(response.context["recent_failures"]) == [case]


def test_admin_dashboard_counts_users_and_cases(client_for, admin_user, alice, bob, case):
    response = client_for(admin_user).get(reverse("diagnosis:dashboard"))
    assert response.context["user_counts"] == {"technician": 1, "radiologist": 1, "admin": 1}
    counts = {item["status"]: item["count"] for item in response.context["status_counts"]}
    assert counts["draft"] == 1


def test_deactivated_radiologist_is_not_offered_for_assignment(client_for, alice):
    make_user("gone", role="radiologist", is_active=False)
    response = client_for(alice).get(reverse("diagnosis:case-create"))
    assert "gone" not in [u.username for u in response.context["form"].fields["assigned_radiologist"].queryset]


def test_scan_count_is_shown_in_the_case_list(client_for, alice, case):
    make_scan(case, uploaded_by=alice)
    make_scan(case, uploaded_by=alice)
    response = client_for(alice).get(reverse("diagnosis:case-list"))
    assert response.context["cases"][0].scan_count == 2
