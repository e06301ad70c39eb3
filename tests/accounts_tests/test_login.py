"""Signing in and out, and the lockout after repeated failures."""
import pytest
from django.urls import reverse

from tests.factories import PASSWORD


def login(client, username, password):
    return client.post(reverse("accounts:login"), {"username": username, "password": password})


def test_it_works(client, alice):
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnosis:dashboard")
    assert client.get(reverse("diagnosis:dashboard")).context["user"] == alice


def test_a_wrong_password_is_refused_with_a_message(client, alice):
    response = login(client, "alice", "wrong")
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_a_deactivated_user_cannot_sign_in(client, alice):
    alice.is_active = False
    alice.save()
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_sign_in_page_renders(client, db):
    response = client.get(reverse("accounts:login"))
    assert response.status_code == 200
    assert "Forgot your password?" in response.content.decode()


def test_signed_in_user_is_sent_on_from_login_page(client_for, alice):
    response = client_for(alice).get(reverse("accounts:login"))
    assert response.status_code == 302


def test_sign_out_needs_post_and_ends_the_session(client_for, alice):
    client = client_for(alice)
    assert client.get(reverse("accounts:logout")).status_code == 405
    response = client.post(reverse("accounts:logout"))
    assert response["Location"] == reverse("accounts:login")
    assert client.get(reverse("diagnosis:dashboard")).status_code == 302


def test_five_failed_attempts_lock_the_account_even_for_the_right_password(client, alice, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert login(client, "alice", "wrong").status_code == 200
    locked = login(client, "alice", "wrong")
    assert locked.status_code == 429
    assert "Sign-in locked" in locked.content.decode()

    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_lockout_is_per_user(client, alice, bob):
    for _ in range(5):
        login(client, "alice", "wrong")
    assert login(client, "bob", PASSWORD).status_code == 302


@pytest.mark.parametrize("name", ["password-change", "password-change-done"])
def test_password_change_pages_need_sign_in(client, db, name):
    response = client.get(reverse(f"accounts:{name}"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
