"""Registering, finding and correcting patients."""
from datetime import date

from django.urls import reverse

from diagnosis.models import CaseEvent, Patient
from tests.factories import make_case, make_patient

NEW = {"record_id": "MRN-777", "name": "Jane Example", "birth_date": "1971-04-12", "sex": "F"}


def test_technician_registers_a_patient(client_for, alice):
    response = client_for(alice).post(reverse("diagnosis:patient-create"), NEW)

    patient = Patient.objects.get(record_id="MRN-777")
    assert response["Location"] == patient.get_absolute_url()
    assert (patient.name, patient.birth_date, patient.sex, patient.created_by) == (
        "Jane Example", date(1971, 4, 12), "F", alice,
    )


def test_a_patient_id_can_only_be_registered_once(client_for, alice, patient):
    response = client_for(alice).post(reverse("diagnosis:patient-create"), {**NEW, "record_id": patient.record_id})
    assert response.status_code == 200
    assert "Patient with this Patient ID already exists." in response.content.decode()


def test_search_finds_patients_by_name_or_id(client_for, alice):
    make_patient(name="Maria Lopez", record_id="MRN-1")
    make_patient(name="John Smith", record_id="XYZ-42")
    client = client_for(alice)

    by_name = client.get(reverse("diagnosis:patient-list"), {"q": "lopez"})
    by_id = client.get(reverse("diagnosis:patient-list"), {"q": "xyz"})

    assert [p.name for p in by_name.context["patients"]] == ["Maria Lopez"]
    assert [p.name for p in by_id.context["patients"]] == ["John Smith"]


def test_patient_list_is_paginated(client_for, alice):
    for i in range(30):
        make_patient(name=f"P {i:02d}")
    response = client_for(alice).get(reverse("diagnosis:patient-list"), {"page": 2})
    assert len(response.context["patients"]) == 5
    assert "Page 2 of 2" in response.content.decode()


def test_editing_a_patient_is_noted_in_each_of_their_cases(client_for, alice, patient):
    first = make_case(created_by=alice, patient=patient)
    second = make_case(created_by=alice, patient=patient)

    client_for(alice).post(
        reverse("diagnosis:patient-update", kwargs={"pk": patient.pk}),
        {**NEW, "record_id": patient.record_id, "name": "Corrected Name"},
    )

    patient.refresh_from_db()
    assert patient.name == "Corrected Name"
    for case in (first, second):
        event = case.events.get(kind=CaseEvent.Kind.PATIENT_UPDATED)
        assert event.actor == alice
        assert "name" in event.data["changed"]


def test_saving_a_patient_unchanged_writes_no_history(client_for, alice, case):
    patient = case.patient
    client_for(alice).post(
        reverse("diagnosis:patient-update", kwargs={"pk": patient.pk}),
        {"record_id": patient.record_id, "name": patient.name, "birth_date": patient.birth_date, "sex": patient.sex},
    )
    assert not case.events.filter(kind=CaseEvent.Kind.PATIENT_UPDATED).exists()


def test_patient_page_lists_only_cases_the_user_may_open(client_for, alice, dave, patient):
    mine = make_case(created_by=alice, patient=patient)
    theirs = make_case(created_by=dave, patient=patient)
    response = client_for(alice).get(patient.get_absolute_url())
    assert list(response.context["cases"]) == [mine]
    assert theirs.short_id not in response.content.decode()
