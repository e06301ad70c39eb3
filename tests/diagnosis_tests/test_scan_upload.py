"""Uploading scans to a case: what is stored, what is refused and why, and the history."""
import pytest
from django.urls import reverse

from diagnosis.models import Case, CaseEvent, Scan
from tests.factories import (
    bomb_png_upload,
    huge_header_png_upload,
    jpeg_upload,
    noise_png_upload,
    png_upload,
    stored_files,
    text_upload,
    truncated_png_upload,
)


@pytest.fixture
def upload(client_for, alice, case):
    """POST files to the case's upload page as alice."""
    client = client_for(alice)
    url = reverse("diagnosis:scan-upload", kwargs={"pk": case.pk})

    def post(*files):
        return client.post(url, {"images": list(files)}, follow=True)

    return post


def page_text(response) -> str:
    return response.content.decode()


def test_it_stores_a_png_and_a_jpeg_with_their_details(upload, case, alice, media_root):
    response = upload(png_upload("axial 01.png", size=(80, 60)), jpeg_upload("axial_02.jpg", size=(64, 48), mode="RGB"))

    assert response.redirect_chain[-1][0] == case.get_absolute_url()
    assert "2 scans uploaded." in page_text(response)
    png, jpeg = case.scans.order_by("original_name")
    assert (png.format, png.width, png.height, png.original_name) == ("PNG", 80, 60, "axial 01.png")
    assert (jpeg.format, jpeg.width, jpeg.height) == ("JPEG", 64, 48)
    assert png.uploaded_by == alice and len(png.sha256) == 64
    # Stored under scans/<case>/<scan>/<safe name>, never the raw name.
    assert png.image.name == f"scans/{case.pk}/{png.pk}/axial_01.png"
    assert (media_root / png.image.name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.thumbnail.name == f"scans/{case.pk}/{png.pk}/thumbnail.jpg"


def test_uploading_scans_writes_history_and_queues_their_analysis(upload, case, alice):
    upload(png_upload("a.png", seed=1), png_upload("b.png", seed=2))

    case.refresh_from_db()
    assert case.status == Case.Status.QUEUED
    uploaded = case.events.filter(kind=CaseEvent.Kind.SCAN_UPLOADED)
    assert sorted(e.scan.original_name for e in uploaded) == ["a.png", "b.png"]
    assert all(e.actor == alice for e in uploaded)
    change = case.events.get(kind=CaseEvent.Kind.STATUS_CHANGED)
    assert (change.from_status, change.to_status) == (Case.Status.DRAFT, Case.Status.QUEUED)
    queued = case.events.get(kind=CaseEvent.Kind.ANALYSIS_QUEUED)
    assert (queued.actor, queued.message) == (alice, "Analysis of 2 scans queued.")
    # One analysis run for the upload: both stages of both scans wait for a worker.
    run = case.analysis_runs.get()
    assert sorted(run.predictions.values_list("scan__original_name", "stage", "status")) == [
        ("a.png", "presence", "pending"), ("a.png", "type", "pending"),
        ("b.png", "presence", "pending"), ("b.png", "type", "pending"),
    ]


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        pytest.param(lambda: truncated_png_upload("broken.png"), "“broken.png” looks like a PNG file but cannot be decoded", id="corrupt"),
        pytest.param(lambda: text_upload("notes.png"), "“notes.png” is not a PNG or JPEG image", id="not-an-image"),
        pytest.param(lambda: noise_png_upload("big.png"), "“big.png” is 1.1 MB; the limit is 1 MB per file", id="over-size"),
        pytest.param(lambda: bomb_png_upload("bomb.png"), "“bomb.png” declares more than 1,000,000 pixels", id="decompression-bomb"),
        pytest.param(lambda: huge_header_png_upload("huge.png"), "“huge.png” declares more than 1,000,000 pixels", id="10-gigapixel-header"),
    ],
)
def test_a_refused_file_gets_its_reason_and_saves_nothing(upload, case, settings, media_root, make_file, reason):
    settings.DIAGNOSIS_MAX_SCAN_MB = 1
    settings.DIAGNOSIS_MAX_SCAN_PIXELS = 1_000_000

    response = upload(make_file())

    assert response.status_code == 200
    assert reason in page_text(response)
    assert Scan.objects.count() == 0
    assert stored_files(media_root) == []
    case.refresh_from_db()
    assert case.status == Case.Status.DRAFT
    assert set(case.events.values_list("kind", flat=True)) == {"created", "assigned"}


def test_one_bad_file_does_not_stop_the_good_ones(upload, case, media_root):
    response = upload(png_upload("good.png"), text_upload("bad.png"))

    text = page_text(response)
    assert "1 scan uploaded." in text
    assert "Not uploaded: “bad.png” is not a PNG or JPEG image." in text
    assert list(case.scans.values_list("original_name", flat=True)) == ["good.png"]
    # The good scan and its thumbnail; nothing of the bad one.
    assert len(stored_files(media_root)) == 2


def test_the_same_image_uploaded_again_is_reported_and_not_stored_twice(upload, case, media_root):
    upload(png_upload("first.png", seed=7))
    response = upload(png_upload("copy-of-first.png", seed=7))

    assert "“copy-of-first.png” was not stored again: it is the same image as “first.png”" in page_text(response)
    assert case.scans.count() == 1
    assert len(stored_files(media_root)) == 2
    skipped = case.events.get(kind=CaseEvent.Kind.DUPLICATES_SKIPPED)
    assert skipped.data["files"] == [{"name": "copy-of-first.png", "same_as": str(case.scans.get().pk)}]


def test_two_copies_in_one_upload_are_stored_once(upload, case):
    response = upload(png_upload("one.png", seed=4), png_upload("two.png", seed=4))

    assert "1 scan uploaded." in page_text(response)
    assert "“two.png” was not stored again" in page_text(response)
    assert case.scans.count() == 1


def test_the_same_image_may_be_on_two_cases(client_for, alice, case, patient):
    from tests.factories import make_case

    other = make_case(created_by=alice, patient=patient)
    client = client_for(alice)
    for target in (case, other):
        client.post(reverse("diagnosis:scan-upload", kwargs={"pk": target.pk}), {"images": [png_upload(seed=9)]})
    assert Scan.objects.count() == 2


def test_submitting_no_file_asks_for_one(upload, case):
    response = upload()
    assert "Choose at least one image file." in page_text(response)
    assert Scan.objects.count() == 0


def test_too_many_files_at_once_are_refused(upload, settings, case):
    settings.DIAGNOSIS_MAX_FILES_PER_UPLOAD = 2
    response = upload(*(png_upload(f"{i}.png", seed=i) for i in range(3)))
    assert "3 files selected; upload at most 2 at a time." in page_text(response)
    assert Scan.objects.count() == 0


def test_a_file_name_cannot_escape_the_case_folder(upload, case):
    upload(png_upload("../../etc/passwd.png"))
    scan = case.scans.get()
    assert scan.image.name.startswith(f"scans/{case.pk}/{scan.pk}/")
    assert ".." not in scan.image.name


def test_new_scans_after_sign_off_send_the_case_back_to_analysis(client_for, reviewable_case, bob, alice):
    from diagnosis.services import do_submit_review

    do_submit_review(case=reviewable_case, user=bob, final_label="normal", ai_agreement="no_ai_result", findings="Normal.")
    client_for(alice).post(
        reverse("diagnosis:scan-upload", kwargs={"pk": reviewable_case.pk}), {"images": [png_upload(seed=99, size=(72, 72))]}
    )
    reviewable_case.refresh_from_db()
    assert reviewable_case.status == Case.Status.QUEUED


def test_an_outsider_is_refused_before_any_file_is_read(client_for, dave, case, monkeypatch):
    import diagnosis.forms

    def fail(file):
        raise AssertionError("validated a file for a user who cannot see the case")

    monkeypatch.setattr(diagnosis.forms, "validate_scan_file", fail)
    response = client_for(dave).post(reverse("diagnosis:scan-upload", kwargs={"pk": case.pk}), {"images": [png_upload()]})
    assert response.status_code == 404
