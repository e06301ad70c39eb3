"""Changing and resetting passwords (reset links go out by e-mail)."""
import re

from django.core import mail
from django.urls import reverse

from tests.factories import PASSWORD

NEW_PASSWORD = "a much better passphrase 42"


def test_user_changes_their_password(client_for, alice):
    client = client_for(alice)
    response = client.post(
        reverse("accounts:password-change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response["Location"] == reverse("accounts:password-change-done")
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert client.get(reverse("accounts:password-change-done")).status_code == 200


def test_a_weak_new_password_is_refused(client_for, alice):
    response = client_for(alice).post(
        reverse("accounts:password-change"),
        {"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"},
    )
    assert response.status_code == 200
    assert "This password is too common." in response.content.decode()


def test_password_reset_by_email_link(client, alice):
    alice.email = "alice@clinic.example"
    alice.save()

    response = client.post(reverse("accounts:password-reset"), {"email": "alice@clinic.example"})
    assert response["Location"] == reverse("accounts:password-reset-done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "NeuroScan Portal: reset your password"
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", message.body).group(1)

    form_page = client.get(link, follow=True)
    assert form_page.context["validlink"]
    response = client.post(
        form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response["Location"] == reverse("accounts:password-reset-complete")
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)


def test_password_reset_for_an_unknown_address_sends_nothing_and_says_the_same(client, db):
    response = client.post(reverse("accounts:password-reset"), {"email": "nobody@example.org"})
    assert response["Location"] == reverse("accounts:password-reset-done")
    assert mail.outbox == []
