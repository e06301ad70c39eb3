"""/health: database, broker and worker availability, for monitoring."""
import pytest
from django.urls import reverse

import portal.health


def get_health(client):
    response = client.get(reverse("health"))
    return response.status_code, response.json()


def test_it_needs_no_account_and_reports_a_broker_that_is_down(client, db):
    status, body = get_health(client)  # tests.settings' broker socket does not exist

    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": False, "error": "message broker unreachable"}
    assert body["checks"]["workers"]["ok"] is False


def test_it_works_when_everything_answers(client, db, monkeypatch):
    monkeypatch.setattr(portal.health, "check_broker", lambda: {"ok": True})
    monkeypatch.setattr(portal.health.celery_app.control, "ping", lambda timeout: [{"celery@a": {"ok": "pong"}}])

    status, body = get_health(client)

    assert status == 200
    assert body == {
        "status": "ok",
        "checks": {"database": {"ok": True}, "broker": {"ok": True}, "workers": {"ok": True, "count": 1}},
    }


def test_no_worker_means_unavailable(client, db, monkeypatch):
    monkeypatch.setattr(portal.health, "check_broker", lambda: {"ok": True})
    monkeypatch.setattr(portal.health.celery_app.control, "ping", lambda timeout: [])

    status, body = get_health(client)

    assert status == 503
    assert body["checks"]["workers"] == {"ok": False, "count": 0, "error": "no analysis worker answered"}


def test_it_is_never_cached(client, db):
    response = client.get(reverse("health"))
    assert "no-store" in response["Cache-Control"]


def test_it_rejects_post(client, db):
    assert client.post(reverse("health")).status_code == 405
