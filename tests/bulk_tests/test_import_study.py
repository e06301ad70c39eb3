"""manage.py import_study: a folder or zip of slices into a patient's case, from the command line."""
import io

import pytest
from django.core.management import CommandError, call_command

from diagnosis.models import Case, Patient, UploadBatch
from tests.factories import dicom_study, image_bytes, make_dicom, ramp, zip_bytes


def run(*args, **options) -> str:
    out = io.StringIO()
    call_command("import_study", *[str(a) for a in args], stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    """A study folder: 5 DICOM slices in a series folder, one PNG, one corrupt file and OS clutter."""
    root = tmp_path / "study"
    for name, data in dicom_study(5):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "extra.png").write_bytes(image_bytes(seed=3))
    (root / "broken.png").write_bytes(image_bytes(seed=4)[:40])
    (root / ".DS_Store").write_bytes(b"clutter")
    return root


def test_it_imports_a_folder_into_a_new_case(folder, study_case, alice):
    output = run(folder, patient="MRN-77", user="alice")

    case = Case.objects.exclude(pk=study_case.pk).get()
    assert case.patient == study_case.patient and case.created_by == alice
    assert case.scans.count() == 6
    batch = UploadBatch.objects.get()
    assert batch.source == UploadBatch.Source.COMMAND and batch.finished_at
    assert (batch.accepted_count, batch.rejected_count, batch.files_received) == (6, 1, 7)
    assert "SE1/IM0001.dcm" in [e["name"] for e in batch.report]
    assert "6 scan(s) accepted, 1 rejected" in output and batch.get_absolute_url() in output


def test_it_imports_a_zip_into_an_existing_case(tmp_path, study_case):
    archive = tmp_path / "study.zip"
    archive.write_bytes(zip_bytes(dicom_study(12)))

    run(archive, patient="MRN-77", case=study_case.pk, user="alice")

    assert study_case.scans.count() == 12
    assert UploadBatch.objects.get().case == study_case


def test_running_it_twice_skips_the_duplicates(tmp_path, study_case):
    archive = tmp_path / "study.zip"
    archive.write_bytes(zip_bytes(dicom_study(3)))
    run(archive, patient="MRN-77", case=study_case.pk, user="alice")
    output = run(archive, patient="MRN-77", case=study_case.pk, user="alice")
    assert "0 scan(s) accepted, 0 rejected, 3 duplicate(s) skipped" in output
    assert study_case.scans.count() == 3


def test_an_unknown_patient_is_an_error(folder, alice):
    with pytest.raises(CommandError, match="No patient with ID 'MRN-404'"):
        run(folder, patient="MRN-404", user="alice")
    assert Case.objects.count() == 0


def test_it_registers_the_patient_from_dicom_when_confirmed(tmp_path, alice):
    archive = tmp_path / "study.zip"
    archive.write_bytes(zip_bytes(dicom_study(2, patient=("MRN-5", "Roe^Richard", "19641231", "M"))))

    output = run(archive, patient="MRN-5", user="alice", create_patient=True, yes=True)

    patient = Patient.objects.get(record_id="MRN-5")
    assert (patient.name, str(patient.birth_date), patient.sex) == ("Roe Richard", "1964-12-31", "M")
    assert patient.created_by == alice and patient.cases.get().scans.count() == 2
    assert "Patient from the DICOM files" in output


def test_without_confirmation_no_patient_is_registered(tmp_path, alice, monkeypatch):
    archive = tmp_path / "study.zip"
    archive.write_bytes(zip_bytes(dicom_study(1, patient=("MRN-5", "Roe^Richard", "19641231", "M"))))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    with pytest.raises(CommandError, match="--yes"):
        run(archive, patient="MRN-5", user="alice", create_patient=True)
    assert not Patient.objects.filter(record_id="MRN-5").exists()


def test_a_case_of_another_patient_is_refused(folder, study_case, alice):
    Patient.objects.create(record_id="MRN-2", name="Other", birth_date="1990-01-01")
    with pytest.raises(CommandError, match="belongs to"):
        run(folder, patient="MRN-2", case=study_case.pk, user="alice")


def test_a_radiologist_cannot_import(folder, study_case, bob):
    with pytest.raises(CommandError, match="may not upload scans"):
        run(folder, patient="MRN-77", user="bob")


def test_a_technician_cannot_import_into_someone_elses_case(folder, study_case, dave):
    with pytest.raises(CommandError, match="No case"):
        run(folder, patient="MRN-77", case=study_case.pk, user="dave")


def test_nothing_accepted_is_a_failure(tmp_path, study_case):
    ct_like = make_dicom(ramp(), modality="CT", patient=("MRN-77", "Doe^Jane", "19800102", "F"))
    (tmp_path / "ct.dcm").write_bytes(ct_like)
    with pytest.raises(CommandError, match="No file of the study was accepted"):
        run(tmp_path / "ct.dcm", patient="MRN-77", case=study_case.pk, user="alice")
    assert "not MR" in UploadBatch.objects.get().report[0]["reason"]
