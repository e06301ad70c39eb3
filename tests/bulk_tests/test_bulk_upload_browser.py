"""The bulk upload page in headless Chromium: folder pick, upload in parts, drop, then the report.

Skipped where Playwright or Chromium is missing, except in CI (.ci/run installs Debian's
chromium and sets NEUROSCAN_REQUIRE_BROWSER=1, as for the pipeline's end-to-end test).
"""
import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from diagnosis.models import UploadBatch
from tests.factories import dicom_study, image_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(what: str) -> None:
    if os.environ.get("NEUROSCAN_REQUIRE_BROWSER"):
        pytest.fail(f"{what} is required here (NEUROSCAN_REQUIRE_BROWSER) but not installed")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def page(live_server, alice, monkeypatch):
    """A Chromium page signed in as alice."""
    if CHROMIUM is None:
        _missing("chromium")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # around it are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    client = Client()
    client.force_login(alice)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
        yield context.new_page()
        browser.close()


@pytest.fixture
def study_folder(tmp_path) -> Path:
    """study/SE1/IM0001..10.dcm, a PNG beside them, a damaged file and macOS clutter."""
    root = tmp_path / "study"
    for name, data in dicom_study(10):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "localizer.png").write_bytes(image_bytes(seed=7))
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 20)
    (root / ".DS_Store").write_bytes(b"clutter")
    return root


def test_a_folder_is_uploaded_in_parts_into_one_batch(page, live_server, study_case, study_folder, monkeypatch):
    from diagnosis import views

    monkeypatch.setattr(views, "BULK_FILES_PER_REQUEST", 4)  # 12 files -> 3 requests
    page.goto(live_server.url + reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}))
    page.set_input_files("#bulk-folder", str(study_folder))
    # The hidden file is left out in the browser already.
    page.wait_for_selector("#bulk-summary:has-text('12 files selected')")

    page.click("#bulk-submit")
    page.wait_for_url(re.compile(r"/uploads/[0-9a-f-]{36}/$"), timeout=60_000)

    batch = UploadBatch.objects.get()
    assert batch.finished_at is not None
    assert (batch.accepted_count, batch.rejected_count) == (11, 1)
    names = [entry["name"] for entry in batch.report]
    # Sent in path order, whatever order the folder listed them in.
    assert names == ["study/broken.dcm", "study/localizer.png", *[f"study/SE1/IM{i:04d}.dcm" for i in range(1, 11)]]
    assert page.inner_text("#count-accepted") == "11" and page.inner_text("#count-rejected") == "1"


def test_dropped_files_are_uploaded(page, live_server, study_case):
    page.goto(live_server.url + reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}))
    # A drop as the browser delivers one, built in the page (files made of PNG bytes).
    png = list(image_bytes(seed=1))
    page.evaluate(
        """(bytes) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
          transfer.items.add(new File(["not an image"], "notes.txt", {type: "text/plain"}));
          const zone = document.getElementById("bulk-drop-zone");
          zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        png,
    )
    page.wait_for_selector("#bulk-summary:has-text('2 files selected')")
    page.click("#bulk-submit")
    page.wait_for_url(re.compile(r"/uploads/[0-9a-f-]{36}/$"), timeout=60_000)
    assert page.inner_text("#count-accepted") == "1" and page.inner_text("#count-rejected") == "1"
    assert "is not a PNG, JPEG or DICOM file" in page.inner_text("#upload-report")


def test_nothing_selected_is_explained_without_a_request(page, live_server, study_case):
    page.goto(live_server.url + reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk}))
    page.click("#bulk-submit")
    assert "Choose or drop at least one file" in page.inner_text("#bulk-errors")
    assert not UploadBatch.objects.exists()
