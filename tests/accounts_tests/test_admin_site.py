"""The Django admin loads for every model, for superusers and administrators by role."""
import pytest
from django.urls import reverse

from accounts.models import User
from diagnosis.models import CaseEvent
from tests.factories import make_user

MODELS = ["accounts/user", "auth/group", "diagnosis/patient", "diagnosis/case", "diagnosis/scan", "diagnosis/caseevent", "diagnosis/review"]


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.org", "x")


@pytest.fixture
def full_case(client_for, reviewable_case, bob):
    from diagnosis.services import do_submit_review

    do_submit_review(case=reviewable_case, user=bob, final_label="normal", ai_agreement="no_ai_result", findings="Normal.")
    return reviewable_case


@pytest.mark.parametrize("who", ["superuser", "admin_user"])
@pytest.mark.parametrize("model", MODELS)
def test_changelists_load(request, client_for, full_case, who, model):
    client = client_for(request.getfixturevalue(who))
    response = client.get(f"/admin/{model}/")
    assert response.status_code == 200


@pytest.mark.parametrize("who", ["superuser", "admin_user"])
def test_change_pages_load(request, client_for, full_case, who):
    client = client_for(request.getfixturevalue(who))
    objects = {
        "diagnosis/case": full_case,
        "diagnosis/patient": full_case.patient,
        "diagnosis/scan": full_case.scans.get(),
        "diagnosis/review": full_case.reviews.get(),
        "diagnosis/caseevent": full_case.events.first(),
        "accounts/user": full_case.created_by,
    }
    for model, obj in objects.items():
        response = client.get(f"/admin/{model}/{obj.pk}/change/")
        assert response.status_code == 200, model
    assert client.get("/admin/accounts/user/add/").status_code == 200


def test_case_page_in_admin_shows_history_read_only(client_for, superuser, full_case):
    response = client_for(superuser).get(f"/admin/diagnosis/case/{full_case.pk}/change/")
    html = response.content.decode()
    assert "History" in html
    assert "Case created" in html
    # No way to add, change or delete history from the admin.
    assert "caseevent_set-0-DELETE" not in html and "events-0-DELETE" not in html


def test_history_cannot_be_deleted_in_the_admin(client_for, superuser, full_case):
    event = full_case.events.first()
    response = client_for(superuser).post(f"/admin/diagnosis/caseevent/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert CaseEvent.objects.filter(pk=event.pk).exists()


def test_technicians_and_radiologists_have_no_admin(client_for, alice, bob):
    for user in (alice, bob):
        response = client_for(user).get(reverse("admin:index"))
        assert response.status_code == 302


def test_admin_adds_a_user_with_a_role(client_for, superuser):
    client_for(superuser).post(
        "/admin/accounts/user/add/",
        {"username": "rita", "role": "radiologist", "email": "", "usable_password": "true",
         "password1": "a long enough passphrase", "password2": "a long enough passphrase"},
    )
    rita = User.objects.get(username="rita")
    assert rita.has_perm("diagnosis.add_review")


def test_admin_action_deactivates_users_but_not_oneself(client_for, superuser):
    tina = make_user("tina")
    client_for(superuser).post(
        "/admin/accounts/user/",
        {"action": "deactivate_users", "_selected_action": [tina.pk, superuser.pk]},
    )
    tina.refresh_from_db()
    superuser.refresh_from_db()
    assert not tina.is_active and superuser.is_active
