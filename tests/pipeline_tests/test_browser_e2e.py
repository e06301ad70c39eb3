"""End to end in headless Chromium: a technician opens a case and uploads two real MRI
slices, a real worker analyses them with the shipped model, the results appear on
the case page by themselves, and a radiologist signs off the review.

Drives Debian's chromium through Playwright for Python (.ci/run installs it with
apt). Skipped where it is missing, except in CI (NEUROSCAN_REQUIRE_BROWSER=1).
"""
import os
import re
import shutil
from pathlib import Path

import pytest
from django.urls import reverse

from diagnosis.models import Case, Prediction, Review
from tests.factories import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker_logs")]

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
# No sandbox (containers run as root), no GPU, and nothing that calls home: the
# test machine has no internet.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS_TIMEOUT_MS = 240_000


@pytest.fixture
def browser(monkeypatch):
    if CHROMIUM is None:
        if os.environ.get("NEUROSCAN_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (NEUROSCAN_REQUIRE_BROWSER) but not installed")
        pytest.skip("no chromium on PATH")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test
    # makes between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + reverse("accounts:login"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(re.escape(base_url) + r"/$"))


def sign_out(page) -> None:
    page.click("nav .dropdown-toggle")
    page.click("button:has-text('Sign out')")
    page.wait_for_url(re.compile(r"/accounts/login/"))


def test_technician_uploads_two_slices_and_a_radiologist_signs_off(
    live_server, browser, alice, bob, use_broker, start_worker, mri_slices
):
    from playwright.sync_api import expect

    start_worker("w1")
    base = live_server.url
    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)

    # The technician registers the patient...
    sign_in(page, base, "alice")
    page.goto(base + reverse("diagnosis:patient-create"))
    page.fill("#id_record_id", "MRN-E2E-1")
    page.fill("#id_name", "Edith Example")
    page.fill("#id_birth_date", "1961-04-12")
    page.select_option("#id_sex", "F")
    page.click("input[type=submit][value='Save patient']")
    expect(page.locator("h1")).to_contain_text("Edith Example")

    # ...opens a case for her, assigned to the radiologist...
    page.click("a:has-text('New case')")
    page.fill("#id_clinical_question", "Progressive headaches; rule out a mass lesion.")
    page.select_option("#id_assigned_radiologist", label=bob.get_full_name())
    page.click("input[type=submit][value='Save case']")

    # ...and uploads two real slices.
    page.wait_for_url(re.compile(r"/scans/upload/$"))
    page.set_input_files("#id_images", [str(path) for path in mri_slices(2)])
    page.click("#upload-button")
    expect(page.locator(".alert").filter(has_text="2 scans uploaded.")).to_be_visible()
    expect(page.locator("body")).to_contain_text("Analysis queued")
    case = Case.objects.get(patient__record_id="MRN-E2E-1")

    # The page polls while the worker runs both stages, then reloads with the results.
    results = page.locator("#case-results .prediction[data-status='success']")
    expect(results).to_have_count(4, timeout=RESULTS_TIMEOUT_MS)
    expect(page.locator("#case-results")).to_have_attribute("data-analysis-state", "idle")
    expect(page.locator("h1 .badge")).to_have_text("Awaiting review")
    assert Prediction.objects.filter(run__case=case, status="success").count() == 4
    sign_out(page)

    # The radiologist opens the case from the worklist and signs off.
    sign_in(page, base, "bob")
    page.click(f"a[href='{case.get_absolute_url()}']")
    expect(page.locator("#case-results .prediction[data-status='success']")).to_have_count(4)
    page.click("a:has-text('Review')")
    page.select_option("#id_final_label", "glioma")
    page.check("input[name=ai_agreement][value=agree]")
    page.fill("#id_findings", "Enhancing left frontal mass, in keeping with the AI result.")
    page.click("input[type=submit][value='Sign off review']")

    expect(page.locator(".alert").filter(has_text="Review signed off.")).to_be_visible()
    expect(page.locator("h1 .badge")).to_have_text("Reviewed")
    review = Review.objects.get(case=case)
    assert (review.signed_off_by, review.final_label, review.ai_agreement) == (bob, "glioma", "agree")
