"""Fixtures for bulk upload tests.

``study_case`` is alice's case for the patient the synthetic DICOM files name
(PatientID MRN-77), so DICOM uploads match the case's patient by default.
"""
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from diagnosis.models import Case
from diagnosis.services import do_create_case
from tests.factories import make_patient


@pytest.fixture
def study_case(db, alice, bob) -> Case:
    patient = make_patient(record_id="MRN-77", name="Jane Doe", created_by=alice)
    return do_create_case(
        patient=patient, user=alice, clinical_question="Follow-up of a known lesion.", assigned_radiologist=bob
    )


@pytest.fixture
def bulk_post(client_for, alice, study_case) -> Callable:
    """POST files to the case's bulk upload as ``user`` (alice by default).

    ``files`` is a list of uploads; ``json=True`` asks for the script's JSON answer.
    """

    def post(*files, user: User | None = None, client: Client | None = None, json: bool = False,
             follow: bool = False, **fields):
        client = client or client_for(user or alice)
        url = reverse("diagnosis:bulk-upload", kwargs={"pk": study_case.pk})
        headers = {"Accept": "application/json"} if json else {}
        return client.post(url, {"files": list(files), **fields}, headers=headers, follow=follow)

    return post
