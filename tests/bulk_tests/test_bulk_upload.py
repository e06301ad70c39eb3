"""The bulk upload page: studies as files, folders and zips, one report line per file."""
import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse
from pydicom.data import get_testdata_file

from diagnosis.models import Case, Scan, UploadBatch
from tests.factories import (
    dicom_study,
    image_bytes,
    jpeg_upload,
    make_dicom,
    png_upload,
    ramp,
    stored_files,
    text_upload,
    truncated_png_upload,
    upload,
    zip_bytes,
)


def outcomes(batch: UploadBatch) -> dict[str, str]:
    return {entry["name"]: entry["outcome"] for entry in batch.report}


def reasons(batch: UploadBatch) -> dict[str, str]:
    return {entry["name"]: entry["reason"] for entry in batch.report}


def bundled(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------
def test_it_works(client_for, alice, study_case):
    response = client_for(alice).get(reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}))
    assert response.status_code == 200
    assert b'id="bulk-form"' in response.content and b"webkitdirectory" in response.content
    assert b"js/bulk_upload.js" in response.content


@pytest.mark.parametrize(("user", "status"), [("bob", 403), ("charlie", 403), ("dave", 404), ("admin_user", 200)])
def test_it_checks_role_and_ownership(request, client_for, study_case, user, status):
    response = client_for(request.getfixturevalue(user)).get(
        reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk})
    )
    assert response.status_code == status


def test_anonymous_users_are_sent_to_login(client, study_case):
    response = client.get(reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(("user", "status"), [("bob", 403), ("dave", 404)])
def test_outsiders_upload_nothing(request, bulk_post, media_root, user, status):
    response = bulk_post(png_upload("a.png"), user=request.getfixturevalue(user))
    assert response.status_code == status
    assert Scan.objects.count() == 0 and UploadBatch.objects.count() == 0
    assert stored_files(media_root) == []


def test_an_administrator_can_upload(bulk_post, admin_user, study_case):
    bulk_post(png_upload("a.png"), user=admin_user)
    assert study_case.scans.get().uploaded_by == admin_user


def test_csrf_is_still_checked(alice, study_case, media_root):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}), {"files": [png_upload("a.png")]}
    )
    assert response.status_code == 403
    assert Scan.objects.count() == 0 and stored_files(media_root) == []


# ---------------------------------------------------------------------------
# What is accepted, rejected and skipped
# ---------------------------------------------------------------------------
def test_a_mixed_batch_reports_every_file(bulk_post, study_case, alice):
    response = bulk_post(
        png_upload("slice 1.png", seed=1),
        jpeg_upload("slice2.jpg", seed=2),
        truncated_png_upload("broken.png"),
        text_upload("notes.txt"),
        upload("MR_small.dcm", bundled("MR_small.dcm")),
        upload("CT_small.dcm", bundled("CT_small.dcm")),
        upload("half.dcm", make_dicom(ramp())[:300]),
        png_upload("slice 1 again.png", seed=1),
        follow=True,
        # pydicom's samples name their own test patient.
        accept_other_patient="on",
    )

    batch = UploadBatch.objects.get()
    assert response.redirect_chain[-1][0] == batch.get_absolute_url()
    assert outcomes(batch) == {
        "slice 1.png": "accepted",
        "slice2.jpg": "accepted",
        "broken.png": "rejected",
        "notes.txt": "rejected",
        "MR_small.dcm": "accepted",
        "CT_small.dcm": "rejected",
        "half.dcm": "rejected",
        "slice 1 again.png": "duplicate",
    }
    why = reasons(batch)
    assert "looks like a PNG file but cannot be decoded" in why["broken.png"]
    assert "is not a PNG, JPEG or DICOM file" in why["notes.txt"]
    assert "modality is CT, not MR" in why["CT_small.dcm"]
    assert "same image as “slice 1.png”" in why["slice 1 again.png"]
    assert (batch.accepted_count, batch.rejected_count, batch.duplicate_count, batch.files_received) == (3, 4, 1, 8)
    assert batch.finished_at is not None and batch.uploaded_by == alice
    # The report page shows each reason.
    page = response.content.decode()
    assert "modality is CT, not MR" in page and "broken.png" in page
    assert study_case.scans.count() == 3
    assert set(study_case.scans.values_list("upload_batch", flat=True)) == {batch.pk}


def test_dicom_metadata_is_kept_on_the_scan_and_the_file_served_as_png(bulk_post, client_for, alice):
    bulk_post(upload("MR_small.dcm", bundled("MR_small.dcm")), accept_other_patient="on")

    scan = Scan.objects.get()
    assert (scan.format, scan.modality, scan.frame, scan.frame_count) == ("DICOM", "MR", 0, 1)
    assert scan.study_uid and scan.series_uid and scan.sop_instance_uid and scan.slice_position
    assert scan.image.name.endswith("/MR_small.png") and scan.original_name == "MR_small.dcm"
    response = client_for(alice).get(scan.get_absolute_url())
    assert response["Content-Type"] == "image/png"
    assert 'filename="MR_small.png"' in response["Content-Disposition"]


def test_a_zip_of_200_dicom_slices_is_accepted_in_scanner_order(bulk_post, study_case, media_root):
    study = dicom_study(200)
    bulk_post(upload("study.zip", zip_bytes(study), "application/zip"))

    batch = UploadBatch.objects.get()
    assert batch.accepted_count == 200 and batch.rejected_count == 0 and batch.files_received == 200
    scans = list(study_case.scans.all())
    assert [s.instance_number for s in scans] == list(range(1, 201))
    assert len({s.series_uid for s in scans}) == 1
    assert scans[0].original_name == "study.zip/SE1/IM0001.dcm"
    # Image and thumbnail per scan, nothing else.
    assert len(stored_files(media_root)) == 400


def test_a_zip_slip_member_and_a_zip_bomb_are_refused_and_nothing_else_is_lost(bulk_post, study_case):
    bomb = b"\0" * (20 * 1024 * 1024)  # deflates about 1000:1
    archive = zip_bytes(
        [
            ("ok/one.png", image_bytes(seed=1)),
            ("../../etc/evil.png", image_bytes(seed=2)),
            ("/abs/evil.png", image_bytes(seed=3)),
            ("bomb.dcm", bomb),
            ("ok/two.png", image_bytes(seed=4)),
            ("nested.zip", zip_bytes([("x.png", image_bytes(seed=5))])),
        ]
    )
    bulk_post(upload("study.zip", archive), png_upload("beside.png", seed=6))

    batch = UploadBatch.objects.get()
    assert outcomes(batch) == {
        "study.zip/ok/one.png": "accepted",
        "study.zip/../../etc/evil.png": "rejected",
        "study.zip//abs/evil.png": "rejected",
        "study.zip/bomb.dcm": "rejected",
        "study.zip/ok/two.png": "accepted",
        "study.zip/nested.zip": "rejected",
        "beside.png": "accepted",
    }
    why = reasons(batch)
    assert "unsafe path" in why["study.zip/../../etc/evil.png"]
    assert "zip bomb" in why["study.zip/bomb.dcm"]
    assert "archive inside the archive" in why["study.zip/nested.zip"]
    assert sorted(study_case.scans.values_list("original_name", flat=True)) == [
        "beside.png", "study.zip/ok/one.png", "study.zip/ok/two.png",
    ]


def test_an_archive_refused_as_a_whole_keeps_the_other_files(bulk_post, study_case, settings):
    settings.DIAGNOSIS_ARCHIVE_MAX_MEMBERS = 3
    archive = zip_bytes([(f"s{i}.png", image_bytes(seed=i)) for i in range(4)])
    bulk_post(png_upload("first.png", seed=10), upload("big.zip", archive), png_upload("last.png", seed=11))

    batch = UploadBatch.objects.get()
    assert outcomes(batch) == {"first.png": "accepted", "big.zip": "rejected", "last.png": "accepted"}
    assert "archive has 4 files; the limit is 3" in reasons(batch)["big.zip"]


def test_the_archive_ratio_limit_comes_from_settings(bulk_post, settings):
    settings.DIAGNOSIS_ARCHIVE_MAX_RATIO = 2
    flat = image_bytes(size=(256, 256))  # a mostly black PNG still deflates a little more
    bulk_post(upload("s.zip", zip_bytes([("flat.bmp", b"\0" * 4096), ("img.png", flat)])))
    batch = UploadBatch.objects.get()
    assert outcomes(batch)["s.zip/flat.bmp"] == "rejected"
    assert "compression ratio" in reasons(batch)["s.zip/flat.bmp"]


def test_a_damaged_zip_is_reported(bulk_post):
    data = zip_bytes([("a.png", image_bytes())])
    bulk_post(upload("cut.zip", data[:-30]))
    batch = UploadBatch.objects.get()
    assert outcomes(batch) == {"cut.zip": "rejected"}
    assert "not a readable zip archive" in reasons(batch)["cut.zip"]


def test_a_multi_frame_dicom_becomes_one_scan_per_frame(bulk_post, study_case):
    import numpy as np

    stack = np.stack([ramp(high=1000 * (i + 1)) for i in range(3)])
    bulk_post(upload("cine.dcm", make_dicom(stack)))

    batch = UploadBatch.objects.get()
    assert list(outcomes(batch)) == ["cine.dcm [frame 1]", "cine.dcm [frame 2]", "cine.dcm [frame 3]"]
    scans = list(study_case.scans.all())
    assert [(s.frame, s.frame_count) for s in scans] == [(0, 3), (1, 3), (2, 3)]
    assert scans[1].frame_label == "frame 2 of 3" and scans[1].download_name == "cine_frame0002.png"


def test_dicom_of_another_patient_is_refused_unless_the_technician_allows_it(bulk_post, study_case):
    other = make_dicom(ramp(), patient=("MRN-99", "Other^Person", "19700101", "M"))
    bulk_post(upload("other.dcm", other))
    batch = UploadBatch.objects.get()
    assert outcomes(batch) == {"other.dcm": "rejected"}
    assert "names a different patient" in reasons(batch)["other.dcm"]
    # The other patient's identity is not written into this case's report.
    assert "MRN-99" not in str(batch.report) and "Other" not in str(batch.report)

    bulk_post(upload("other.dcm", other), accept_other_patient="on")
    assert study_case.scans.count() == 1


def test_dicom_without_a_patient_id_is_accepted(bulk_post, study_case):
    bulk_post(upload("anon.dcm", make_dicom(ramp(), patient=("", "", "", ""))))
    assert study_case.scans.count() == 1


def test_nothing_chosen_is_an_error(bulk_post):
    response = bulk_post()
    assert response.status_code == 400
    assert "Choose at least one file" in response.content.decode()
    assert UploadBatch.objects.count() == 0


# ---------------------------------------------------------------------------
# The page's script: several requests into one batch, JSON answers, folder paths
# ---------------------------------------------------------------------------
def test_a_study_sent_in_parts_lands_in_one_batch(bulk_post, study_case):
    first = bulk_post(
        png_upload("a.png", seed=1), png_upload("b.png", seed=2), json=True,
        paths=["study/SE1/a.png", "study/SE1/b.png"],
    )
    assert first.status_code == 200
    answer = first.json()
    assert answer["accepted"] == 2 and answer["report_url"].endswith(f"/uploads/{answer['batch']}/")
    assert [e["name"] for e in answer["entries"]] == ["study/SE1/a.png", "study/SE1/b.png"]
    assert UploadBatch.objects.get().finished_at is None

    second = bulk_post(png_upload("c.png", seed=3), truncated_png_upload("d.png"), json=True,
                       batch=answer["batch"], finish="on").json()
    assert second["batch"] == answer["batch"]
    assert (second["accepted"], second["rejected"]) == (3, 1)
    assert [e["outcome"] for e in second["entries"]] == ["accepted", "rejected"]

    batch = UploadBatch.objects.get()
    assert batch.finished_at is not None and len(batch.report) == 4
    # A finished batch takes no more files.
    late = bulk_post(png_upload("e.png", seed=5), json=True, batch=answer["batch"])
    assert late.status_code == 400 and "already finished" in late.json()["errors"][0]


def test_a_batch_of_another_user_cannot_be_added_to(bulk_post, admin_user, alice):
    answer = bulk_post(png_upload("a.png", seed=1), json=True).json()
    response = bulk_post(png_upload("b.png", seed=2), json=True, batch=answer["batch"], user=admin_user)
    assert response.status_code == 400
    assert Scan.objects.count() == 1


def test_folder_paths_are_tidied_for_display(bulk_post):
    bulk_post(png_upload("a.png"), json=True, paths=["/../study//./a.png"])
    assert list(outcomes(UploadBatch.objects.get())) == ["study/a.png"]


def test_one_group_failing_to_store_loses_nothing_else(bulk_post, study_case, monkeypatch):
    """A storage error on one group of scans is reported; the other groups are kept."""
    from diagnosis import bulk

    monkeypatch.setattr(bulk, "FLUSH_COUNT", 2)
    real = bulk.do_add_scans
    calls = []

    def flaky(**kwargs):
        calls.append(len(kwargs["scans"]))
        if len(calls) == 2:
            raise OSError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(bulk, "do_add_scans", flaky)
    bulk_post(*[png_upload(f"{i}.png", seed=i) for i in range(6)])

    batch = UploadBatch.objects.get()
    assert calls == [2, 2, 2]
    assert [e["outcome"] for e in batch.report] == ["accepted", "accepted", "rejected", "rejected", "accepted", "accepted"]
    assert "could not be stored" in batch.report[2]["reason"]
    assert study_case.scans.count() == 4


# ---------------------------------------------------------------------------
# Analysis of what was accepted (eager Celery and the stub predictor of tests.settings)
# ---------------------------------------------------------------------------
def test_a_zip_of_200_slices_is_accepted_and_analysed(bulk_post, study_case, client_for, alice,
                                                       django_capture_on_commit_callbacks):
    from diagnosis.models import Prediction
    from diagnosis.progress import progress_of

    with django_capture_on_commit_callbacks(execute=True):
        bulk_post(upload("study.zip", zip_bytes(dicom_study(200)), "application/zip"))

    batch = UploadBatch.objects.get()
    assert batch.accepted_count == 200
    progress = progress_of(batch)
    assert (progress.total, progress.done, progress.failed, progress.finished) == (200, 200, 0, True)
    # Both stages for every slice, once each.
    assert Prediction.objects.filter(scan__upload_batch=batch, status=Prediction.Status.SUCCESS).count() == 400
    study_case.refresh_from_db()
    assert study_case.status == Case.Status.AWAITING_REVIEW
    page = client_for(alice).get(batch.get_absolute_url()).content.decode()
    assert "200 of 200" in page
