"""Import a study (a folder or a .zip of PNG, JPEG or DICOM files) into a case from the command line.

    python manage.py import_study PATH --patient MRN [--case UUID] [--user NAME]

Files go through the same checks and the same storage path as the bulk upload page
(``diagnosis.bulk.StudyImporter``), so they are analysed the same way, and the run
is recorded as an upload batch with its per-file report ("My uploads" of --user).
"""
from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.models import User
from diagnosis.access import cases_for
from diagnosis.archives import is_zip
from diagnosis.bulk import StudyImporter
from diagnosis.models import Case, Patient, UploadBatch
from diagnosis.services import ServiceError, do_create_case, do_create_patient, do_create_upload_batch
from diagnosis.validators import patient_fields_from_dicom

# Folders and OS clutter that are never part of a study (as in diagnosis.archives).
SKIPPED_NAMES = {"Thumbs.db", "desktop.ini", "DICOMDIR", "__MACOSX"}


def study_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` in a stable order, hidden files and OS clutter left out."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") or part in SKIPPED_NAMES for part in relative.parts):
            continue
        # A symbolic link could point anywhere on the server; only real files are read.
        if path.is_file() and not path.is_symlink():
            files.append(path)
    return files


class Command(BaseCommand):
    help = "Import a study (folder or .zip of PNG, JPEG or DICOM files) into a patient's case."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path, help="A folder or a .zip archive.")
        parser.add_argument("--patient", required=True, help="The patient's ID (MRN), as registered in the portal.")
        parser.add_argument("--case", help="UUID of the case to add to; by default a new case is opened.")
        parser.add_argument(
            "--user",
            default=settings.PORTAL_ADMIN_USERNAME,
            help="Technician or administrator the import is recorded under (default: %(default)s).",
        )
        parser.add_argument(
            "--question",
            default="Imported study.",
            help="Clinical question of the new case (when --case is not given).",
        )
        parser.add_argument(
            "--create-patient",
            action="store_true",
            help="If the patient is not registered, offer to register them from the study's DICOM "
            "patient tags (asks for confirmation unless --yes).",
        )
        parser.add_argument("--yes", action="store_true", help="Confirm without asking (for scripts).")
        parser.add_argument(
            "--accept-other-patient",
            action="store_true",
            help="Store DICOM files whose patient ID differs from --patient (anonymised exports).",
        )

    def handle(self, *args, path: Path, patient: str, case: str | None, user: str, question: str,
               create_patient: bool, yes: bool, accept_other_patient: bool, verbosity: int, **options) -> None:
        path = path.expanduser()
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        uploader = self._uploader(user)
        patient_obj = self._patient(patient, path, uploader, create=create_patient, confirmed=yes)
        case_obj = self._case(case, patient_obj, uploader, question)

        batch = do_create_upload_batch(case=case_obj, user=uploader, source=UploadBatch.Source.COMMAND)
        importer = StudyImporter(batch=batch, accept_other_patient=accept_other_patient)
        show_bar = verbosity > 0
        with tqdm(total=0, unit="file", desc="Importing", disable=not show_bar, file=sys.stderr) as bar:
            if path.is_dir():
                files = study_files(path)
                bar.total = len(files)
                bar.refresh()
                for file in files:
                    importer.add_path(file, name=str(file.relative_to(path)))
                    bar.update(1)
            else:
                importer.add_path(path, name=path.name, progress=bar)
                if not bar.total:
                    bar.total = 1
                    bar.update(1)
        batch = importer.finish()
        self._report(batch, case_obj, verbosity)
        if not batch.accepted_count and batch.rejected_count:
            raise CommandError("No file of the study was accepted.")

    # ------------------------------------------------------------------ helpers
    def _uploader(self, username: str) -> User:
        try:
            user = User.objects.get(username=username, is_active=True)
        except User.DoesNotExist:
            raise CommandError(f"No active user {username!r}; name a technician with --user.") from None
        if not user.has_perm("diagnosis.add_scan"):
            raise CommandError(f"{username} may not upload scans; use a technician or administrator.")
        return user

    def _patient(self, record_id: str, path: Path, user: User, *, create: bool, confirmed: bool) -> Patient:
        patient = Patient.objects.filter(record_id__iexact=record_id).first()
        if patient is not None:
            return patient
        if not create:
            raise CommandError(
                f"No patient with ID {record_id!r}. Register them first, or pass --create-patient "
                "to fill them in from the study's DICOM files."
            )
        fields = self._dicom_patient(path)
        fields["record_id"] = record_id
        missing = [name for name in ("name", "birth_date") if name not in fields]
        if missing:
            raise CommandError(
                f"The study's DICOM files do not give the patient's {' and '.join(missing)}; "
                "register the patient in the portal first."
            )
        fields.setdefault("sex", Patient.Sex.UNKNOWN)
        self.stdout.write("Patient from the DICOM files:")
        for label, key in (("ID", "record_id"), ("Name", "name"), ("Birth date", "birth_date"), ("Sex", "sex")):
            self.stdout.write(f"  {label:<11} {fields[key]}")
        if not confirmed:
            if not sys.stdin.isatty():
                raise CommandError("Not confirmed: run with --yes to register this patient without a prompt.")
            if input("Register this patient? [y/N] ").strip().lower() not in ("y", "yes"):
                raise CommandError("Not confirmed; nothing imported.")
        try:
            return do_create_patient(user=user, **fields)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None

    def _dicom_patient(self, path: Path) -> dict:
        """Patient tags of the first DICOM file of the study (a folder or a zip)."""
        from diagnosis.archives import iter_members
        from diagnosis.bulk import archive_limits
        from mlcore.dicom import DicomError, is_dicom, read_patient

        if path.is_dir():
            for file in study_files(path):
                with file.open("rb") as handle:
                    if is_dicom(handle.read(132)):
                        handle.seek(0)
                        try:
                            return patient_fields_from_dicom(read_patient(handle))
                        except DicomError:
                            continue
            return {}
        with path.open("rb") as handle:
            head = handle.read(132)
            handle.seek(0)
            if is_dicom(head):
                return patient_fields_from_dicom(read_patient(handle))
            if not is_zip(head):
                return {}
            limits = archive_limits()
            for member in iter_members(handle, limits):
                if member.error or member.size < 132:
                    continue
                data = member.read(limits.max_member_bytes)
                if is_dicom(data[:132]):
                    try:
                        return patient_fields_from_dicom(read_patient(data))
                    except DicomError:
                        continue
        return {}

    def _case(self, case_id: str | None, patient: Patient, user: User, question: str) -> Case:
        if case_id is None:
            try:
                case = do_create_case(patient=patient, user=user, clinical_question=question)
            except ServiceError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Opened case {case.pk} for {patient}.")
            return case
        try:
            case = cases_for(user).get(pk=case_id)
        except (Case.DoesNotExist, ValidationError):
            raise CommandError(f"No case {case_id} that {user} may upload to.") from None
        if case.patient_id != patient.pk:
            raise CommandError(f"Case {case_id} belongs to {case.patient}, not to patient {patient.record_id}.")
        return case

    def _report(self, batch: UploadBatch, case: Case, verbosity: int) -> None:
        if verbosity > 1:
            for entry in batch.report:
                self.stdout.write(f"  {entry['outcome']:<9} {entry['name']}" + (f": {entry['reason']}" if entry["reason"] else ""))
        elif verbosity > 0:
            for entry in batch.entries(UploadBatch.Outcome.REJECTED):
                self.stdout.write(self.style.WARNING(f"  rejected  {entry['reason']}"))
        style = self.style.SUCCESS if batch.accepted_count else self.style.WARNING
        self.stdout.write(
            style(
                f"{batch.accepted_count} scan(s) accepted, {batch.rejected_count} rejected, "
                f"{batch.duplicate_count} duplicate(s) skipped, into case {case.pk}."
            )
        )
        self.stdout.write(f"Report: {batch.get_absolute_url()}")

