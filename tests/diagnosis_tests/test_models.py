"""Case status workflow and the append-only history."""
import pytest

from diagnosis.models import Case, CaseEvent, InvalidStatusTransition, scan_upload_to, Scan


def test_update_status_moves_the_case_and_records_who(case, bob):
    assert case.update_status(Case.Status.QUEUED, actor=bob) is True

    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED
    event = case.events.filter(kind=CaseEvent.Kind.STATUS_CHANGED).get()
    assert (event.from_status, event.to_status, event.actor) == ("draft", "queued", bob)
    assert event.message == "Status changed from Draft to Queued for analysis."


def test_update_status_to_the_same_status_records_nothing(case):
    before = case.events.count()
    assert case.update_status(Case.Status.DRAFT) is False
    assert case.events.count() == before


def test_a_draft_case_cannot_jump_to_reviewed(case):
    with pytest.raises(InvalidStatusTransition, match="cannot go from 'Draft' to 'Reviewed'"):
        case.update_status(Case.Status.REVIEWED)
    case.refresh_from_db()
    assert case.status == Case.Status.DRAFT


def test_a_stale_copy_cannot_overwrite_a_newer_status(case):
    stale = Case.objects.get(pk=case.pk)
    case.update_status(Case.Status.QUEUED)
    with pytest.raises(InvalidStatusTransition, match="changed status in the meantime"):
        stale.update_status(Case.Status.AWAITING_REVIEW)
    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED


def test_every_status_has_a_colour_and_transitions():
    for status in Case.Status:
        assert status in Case.STATUS_CONTEXT
        assert status in Case.TRANSITIONS


def test_history_events_cannot_be_edited_or_deleted(case):
    event = case.events.first()
    event.message = "rewritten"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    with pytest.raises(TypeError, match="append-only"):
        case.events.update(message="rewritten")


def test_every_event_kind_has_a_colour_and_icon():
    for kind in CaseEvent.Kind:
        assert kind in CaseEvent.DISPLAY


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("axial 01.png", "axial_01.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\tech\\scan.jpg", "scan.jpg"),
        ("..", "scan.png"),
        ("", "scan.png"),
    ],
)
def test_upload_path_is_safe(case, name, expected):
    scan = Scan(case=case, format=Scan.Format.PNG)
    assert scan_upload_to(scan, name) == f"scans/{case.pk}/{scan.pk}/{expected}"
