"""Scan images are served only through access-checked views."""
from django.conf import settings
from django.urls import reverse

from tests.factories import image_bytes, png_upload, make_scan


def test_it_serves_the_original_bytes(client_for, bob, case, alice):
    upload = png_upload("slice.png", seed=5)
    original = upload.read()
    scan = make_scan(case, uploaded_by=alice, upload=upload)

    response = client_for(bob).get(reverse("diagnosis:scan-file", kwargs={"pk": scan.pk}))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == original
    assert response["Content-Type"] == "image/png"
    assert "slice.png" in response["Content-Disposition"]
    assert "private" in response["Cache-Control"]


def test_it_serves_a_jpeg_thumbnail(client_for, bob, reviewable_case):
    scan = reviewable_case.scans.get()
    response = client_for(bob).get(reverse("diagnosis:scan-thumbnail", kwargs={"pk": scan.pk}))
    assert response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"


def test_sixteen_bit_scans_get_a_visible_thumbnail(case, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile
    import io
    import numpy as np
    from PIL import Image

    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 8).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    scan = make_scan(case, uploaded_by=alice, upload=SimpleUploadedFile("deep.png", out.getvalue()))
    with scan.thumbnail.open("rb") as f, Image.open(f) as thumb:
        assert thumb.mode == "L"
        assert thumb.getextrema() == (0, 255)


def test_media_files_have_no_public_url(client_for, alice, reviewable_case):
    scan = reviewable_case.scans.get()
    response = client_for(alice).get(settings.MEDIA_URL + scan.image.name)
    assert response.status_code == 404
    response = client_for(alice).get("/media/" + scan.image.name)
    assert response.status_code == 404


def test_a_missing_file_is_a_404_not_a_crash(client_for, alice, reviewable_case):
    scan = reviewable_case.scans.get()
    scan.image.storage.delete(scan.image.name)
    response = client_for(alice).get(reverse("diagnosis:scan-file", kwargs={"pk": scan.pk}))
    assert response.status_code == 404


def test_helper_image_is_valid():
    assert image_bytes()[:4] == b"\x89PNG"
