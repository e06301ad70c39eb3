"""Who may open which page: every diagnosis view against every kind of user.

Anonymous users are sent to the login page; a signed-in user whose role lacks the
action gets 403; a case the user cannot see is 404, so its existence is not
revealed.
"""
import pytest
from django.urls import reverse

from tests.factories import make_scan

ANON, ALICE, BOB, CHARLIE, DAVE, ADMIN = "anonymous", "alice", "bob", "charlie", "dave", "admin_user"

# (url name, needs the case's pk?, {user: expected status for GET})
GET_MATRIX = [
    ("diagnosis:dashboard", None, {ALICE: 200, BOB: 200, CHARLIE: 200, DAVE: 200, ADMIN: 200}),
    ("diagnosis:patient-list", None, {ALICE: 200, BOB: 200, CHARLIE: 200, ADMIN: 200}),
    ("diagnosis:patient-create", None, {ALICE: 200, BOB: 403, CHARLIE: 403, ADMIN: 200}),
    ("diagnosis:patient-detail", "patient", {ALICE: 200, BOB: 200, ADMIN: 200}),
    ("diagnosis:patient-update", "patient", {ALICE: 200, BOB: 403, CHARLIE: 403, ADMIN: 200}),
    ("diagnosis:case-list", None, {ALICE: 200, BOB: 200, CHARLIE: 200, DAVE: 200, ADMIN: 200}),
    ("diagnosis:case-create", None, {ALICE: 200, BOB: 403, CHARLIE: 403, ADMIN: 200}),
    ("diagnosis:case-detail", "case", {ALICE: 200, BOB: 200, CHARLIE: 404, DAVE: 404, ADMIN: 200}),
    ("diagnosis:case-update", "case", {ALICE: 200, BOB: 403, CHARLIE: 403, DAVE: 404, ADMIN: 200}),
    ("diagnosis:scan-upload", "case", {ALICE: 200, BOB: 403, CHARLIE: 403, DAVE: 404, ADMIN: 200}),
    # Sign-off is for radiologists only, administrators included.
    ("diagnosis:review-create", "case", {ALICE: 403, BOB: 200, CHARLIE: 404, DAVE: 403, ADMIN: 403}),
    ("diagnosis:scan-file", "scan", {ALICE: 200, BOB: 200, CHARLIE: 404, DAVE: 404, ADMIN: 200}),
    ("diagnosis:scan-thumbnail", "scan", {ALICE: 200, BOB: 200, CHARLIE: 404, DAVE: 404, ADMIN: 200}),
]

CASES = [
    pytest.param(name, target, user, status, id=f"{name.split(':')[1]}-{user}")
    for name, target, expected in GET_MATRIX
    for user, status in expected.items()
]


@pytest.fixture
def targets(reviewable_case):
    return {
        "case": reviewable_case,
        "patient": reviewable_case.patient,
        "scan": reviewable_case.scans.get(),
    }


def _url(name: str, target: str | None, targets) -> str:
    if target is None:
        return reverse(name)
    return reverse(name, kwargs={"pk": targets[target].pk})


@pytest.mark.parametrize(("name", "target", "user", "status"), CASES)
def test_each_role_gets_the_page_or_is_refused(request, client_for, targets, name, target, user, status):
    client = client_for(request.getfixturevalue(user))
    response = client.get(_url(name, target, targets))
    assert response.status_code == status


@pytest.mark.parametrize(("name", "target"), [(name, target) for name, target, _ in GET_MATRIX])
def test_anonymous_visitor_is_sent_to_login(client_for, targets, name, target):
    url = _url(name, target, targets)
    response = client_for(None).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert f"next={url}" in response["Location"].replace("%2F", "/")


POST_MATRIX = [
    ("diagnosis:patient-create", None, {BOB: 403, CHARLIE: 403}),
    ("diagnosis:patient-update", "patient", {BOB: 403}),
    ("diagnosis:case-create", None, {BOB: 403}),
    ("diagnosis:case-update", "case", {BOB: 403, DAVE: 404}),
    ("diagnosis:scan-upload", "case", {BOB: 403, CHARLIE: 403, DAVE: 404}),
    ("diagnosis:review-create", "case", {ALICE: 403, ADMIN: 403, CHARLIE: 404}),
]


@pytest.mark.parametrize(
    ("name", "target", "user", "status"),
    [
        pytest.param(name, target, user, status, id=f"{name.split(':')[1]}-{user}")
        for name, target, expected in POST_MATRIX
        for user, status in expected.items()
    ],
)
def test_forbidden_writes_change_nothing(request, client_for, targets, name, target, user, status):
    case = targets["case"]
    events_before = case.events.count()
    client = client_for(request.getfixturevalue(user))
    response = client.post(_url(name, target, targets), {"findings": "x", "final_label": "normal"})
    assert response.status_code == status
    assert case.events.count() == events_before
    assert case.reviews.count() == 0


def test_radiologist_sees_unassigned_cases_in_the_shared_worklist(client_for, charlie, alice):
    from tests.factories import make_case

    unassigned = make_case(created_by=alice)
    make_scan(unassigned, uploaded_by=alice)
    response = client_for(charlie).get(reverse("diagnosis:case-detail", kwargs={"pk": unassigned.pk}))
    assert response.status_code == 200


def test_scan_files_refuse_post(client_for, alice, targets):
    url = reverse("diagnosis:scan-file", kwargs={"pk": targets["scan"].pk})
    assert client_for(alice).post(url).status_code == 405
