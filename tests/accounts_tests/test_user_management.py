"""The in-app user page for administrators."""
import pytest
from django.urls import reverse

from accounts.models import User
from tests.factories import PASSWORD

NEW_USER = {
    "username": "tina",
    "first_name": "Tina",
    "last_name": "Tech",
    "email": "tina@clinic.example",
    "role": "technician",
    "password1": "a long enough passphrase",
    "password2": "a long enough passphrase",
}


@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("name", ["user-list", "user-create"])
def test_only_administrators_manage_users(request, client_for, user, name):
    response = client_for(request.getfixturevalue(user)).get(reverse(f"accounts:{name}"))
    assert response.status_code == 403


@pytest.mark.parametrize("name", ["user-list", "user-create"])
def test_anonymous_visitor_is_sent_to_login(client_for, db, name):
    response = client_for(None).get(reverse(f"accounts:{name}"))
    assert response["Location"].startswith(reverse("accounts:login"))


def test_admin_lists_and_searches_users(client_for, admin_user, alice, bob):
    client = client_for(admin_user)
    assert {u.username for u in client.get(reverse("accounts:user-list")).context["users"]} == {"ada", "alice", "bob"}
    assert [u.username for u in client.get(reverse("accounts:user-list"), {"role": "radiologist"}).context["users"]] == ["bob"]
    assert [u.username for u in client.get(reverse("accounts:user-list"), {"q": "tana"}).context["users"]] == ["alice"]


def test_admin_creates_a_user_who_can_then_sign_in(client_for, client, admin_user):
    response = client_for(admin_user).post(reverse("accounts:user-create"), NEW_USER)
    assert response["Location"] == reverse("accounts:user-list")
    tina = User.objects.get(username="tina")
    assert tina.role == User.Role.TECHNICIAN and tina.has_perm("diagnosis.add_case")
    assert client.post(reverse("accounts:login"), {"username": "tina", "password": NEW_USER["password1"]}).status_code == 302


def test_admin_changes_a_users_role(client_for, admin_user, alice):
    client_for(admin_user).post(
        reverse("accounts:user-update", kwargs={"pk": alice.pk}),
        {"first_name": "Alice", "last_name": "Tanaka", "email": "", "role": "radiologist"},
    )
    alice.refresh_from_db()
    assert alice.role == User.Role.RADIOLOGIST and alice.has_perm("diagnosis.add_review")


def test_admin_cannot_change_their_own_role(client_for, admin_user):
    response = client_for(admin_user).post(
        reverse("accounts:user-update", kwargs={"pk": admin_user.pk}),
        {"first_name": "", "last_name": "", "email": "", "role": "technician"},
    )
    assert "You cannot change your own role." in response.content.decode()
    admin_user.refresh_from_db()
    assert admin_user.role == User.Role.ADMIN


def test_deactivated_user_can_no_longer_sign_in(client_for, client, admin_user, alice):
    response = client_for(admin_user).post(reverse("accounts:user-deactivate", kwargs={"pk": alice.pk}))
    assert response["Location"] == reverse("accounts:user-list")
    alice.refresh_from_db()
    assert not alice.is_active
    assert client.post(reverse("accounts:login"), {"username": "alice", "password": PASSWORD}).status_code == 200
    assert "_auth_user_id" not in client.session


def test_admin_reactivates_a_user(client_for, admin_user, alice):
    alice.is_active = False
    alice.save()
    client_for(admin_user).post(reverse("accounts:user-activate", kwargs={"pk": alice.pk}))
    alice.refresh_from_db()
    assert alice.is_active


def test_admin_cannot_deactivate_themselves(client_for, admin_user):
    response = client_for(admin_user).post(reverse("accounts:user-deactivate", kwargs={"pk": admin_user.pk}), follow=True)
    assert "You cannot deactivate your own account." in response.content.decode()
    admin_user.refresh_from_db()
    assert admin_user.is_active


def test_deactivation_rejects_get(client_for, admin_user, alice):
    assert client_for(admin_user).get(reverse("accounts:user-deactivate", kwargs={"pk": alice.pk})).status_code == 405


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_non_admins_cannot_deactivate_anyone(request, client_for, user, charlie):
    response = client_for(request.getfixturevalue(user)).post(reverse("accounts:user-deactivate", kwargs={"pk": charlie.pk}))
    assert response.status_code == 403
    charlie.refresh_from_db()
    assert charlie.is_active
