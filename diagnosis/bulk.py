"""Bulk import of a study into a case: many files, folders and .zip archives of PNG, JPEG or DICOM.

The bulk upload page and ``manage.py import_study`` both feed files to a
:class:`StudyImporter`, which decides per file, archive member or DICOM frame
whether it is accepted, rejected (with the reason) or a duplicate, and records
that in the case's :class:`~diagnosis.models.UploadBatch`.

Memory stays bounded whatever the upload size:

- Django has already streamed the request's files to temporary files (any request
  larger than ``FILE_UPLOAD_MAX_MEMORY_SIZE`` is written to disk as it arrives);
- a zip is read member by member, each member copied to a spooled temporary file
  that moves to disk above ``FILE_UPLOAD_MAX_MEMORY_SIZE``;
- accepted images are handed to ``do_add_scans`` (the one path that stores scans
  and starts their analysis) in small groups, and released after each group.

One bad file never loses the others: every file is checked on its own, and a
group that fails to store is reported as such while the groups before and after
it are kept.
"""
from __future__ import annotations

import logging
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from diagnosis.archives import ArchiveError, ArchiveLimits, count_files, is_zip, iter_members
from diagnosis.models import Case, UploadBatch
from diagnosis.services import do_add_scans, do_record_upload_report
from diagnosis.validators import ValidatedScan, validate_dicom_file, validate_scan_file

logger = logging.getLogger(__name__)

# Accepted images are stored in groups of at most this many, or this many bytes:
# few enough to keep memory and open files bounded, many enough that a study's
# slices reach the analysis queue together.
FLUSH_COUNT = 50
FLUSH_BYTES = 64 * 1024 * 1024

Outcome = UploadBatch.Outcome


class Progress(Protocol):
    """What StudyImporter needs of a progress bar (tqdm fits)."""

    total: int | None

    def update(self, n: int = 1) -> object: ...

    def refresh(self) -> object: ...


def archive_limits() -> ArchiveLimits:
    """The zip limits from settings. A member may be as large as the largest single file."""
    largest_file_mb = max(settings.DIAGNOSIS_MAX_SCAN_MB, settings.DIAGNOSIS_MAX_DICOM_MB)
    return ArchiveLimits(
        max_members=settings.DIAGNOSIS_ARCHIVE_MAX_MEMBERS,
        max_total_bytes=settings.DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB * 1024 * 1024,
        max_member_bytes=largest_file_mb * 1024 * 1024,
        max_ratio=float(settings.DIAGNOSIS_ARCHIVE_MAX_RATIO),
    )


def _same_patient(dicom_id: str, record_id: str) -> bool:
    return dicom_id.strip().casefold() == record_id.strip().casefold()


@dataclass
class _Pending:
    scan: ValidatedScan
    entry: dict


@dataclass
class StudyImporter:
    """Feeds files into ``batch`` and reports on each; call :meth:`finish` at the end.

    ``accept_other_patient``: store DICOM files whose PatientID differs from the
    case's patient. Off by default, because a study filed under the wrong patient
    is a clinical error; anonymised exports need it on.
    """

    batch: UploadBatch
    accept_other_patient: bool = False
    # Report lines made by this importer (this request), for the page's script.
    new_entries: list[dict] = field(default_factory=list, init=False)
    # Accepted images waiting to be stored, report lines not yet saved, files read since.
    _pending: list[_Pending] = field(default_factory=list, init=False, repr=False)
    _pending_bytes: int = field(default=0, init=False, repr=False)
    _unsaved: list[dict] = field(default_factory=list, init=False, repr=False)
    _files_seen: int = field(default=0, init=False, repr=False)

    @property
    def case(self) -> Case:
        return self.batch.case

    # ------------------------------------------------------------------ input
    def add_upload(self, file: UploadedFile, *, name: str | None = None, progress: Progress | None = None) -> None:
        """One uploaded file: a PNG, JPEG, DICOM or .zip of those. Never raises for a bad file."""
        name = (name or file.name or "unnamed file")[:255]
        try:
            file.seek(0)
            head = file.read(132)
            file.seek(0)
            if is_zip(head):
                # Counted by member, not as a file of its own.
                self._add_archive(file, name, progress)
            else:
                self._files_seen += 1
                self._add_file(file, name, head)
        except Exception:
            # A bug or I/O error on one file must not lose the rest of the batch.
            logger.exception("Bulk upload: unexpected error on %r", name)
            self._reject(name, "could not be processed because of an internal error; try it again")
        finally:
            if not self._holds(file):
                file.close()

    def add_path(self, path: Path, *, name: str | None = None, progress: Progress | None = None) -> None:
        """A file on disk (``import_study``): read as a stream, like an upload."""
        path = Path(path)
        handle = path.open("rb")
        upload = UploadedFile(file=handle, name=path.name, size=path.stat().st_size)
        self.add_upload(upload, name=name or path.name, progress=progress)

    def _holds(self, file: UploadedFile) -> bool:
        """Whether ``file`` waits in the pending group (it is closed when the group is stored)."""
        return any(item.scan.file is file for item in self._pending)

    def _add_file(self, file: UploadedFile, name: str, head: bytes) -> None:
        from mlcore.dicom import is_dicom

        if is_dicom(head):
            self._add_dicom(file, name)
            return
        try:
            scan = validate_scan_file(file)
        except ValidationError as exc:
            if exc.code == "not_an_image":
                self._reject(name, f"“{name}” is not a PNG, JPEG or DICOM file, nor a .zip of them.")
            else:
                self._reject(name, " ".join(exc.messages))
            return
        self._queue(ValidatedScan(file=scan.file, info=scan.info, original_name=name), name)

    def _add_dicom(self, file: UploadedFile, name: str) -> None:
        try:
            dicom = validate_dicom_file(file, name=name)
        except ValidationError as exc:
            self._reject(name, " ".join(exc.messages))
            return
        dicom_id = dicom.patient.get("record_id", "")
        record_id = self.case.patient.record_id
        if dicom_id and not self.accept_other_patient and not _same_patient(dicom_id, record_id):
            # The other patient's ID is not repeated: it would put a second patient's
            # identity on this case's report.
            self._reject(
                name,
                f"“{name}” names a different patient in its DICOM header than this case's "
                f"patient ({record_id}). Upload it to that patient's case, or tick "
                "“DICOM patient ID may differ” if the files are anonymised.",
            )
            return
        for frame in dicom.frames:
            label = name if len(dicom.frames) == 1 else f"{name} [frame {frame.info.dicom['frame'] + 1}]"
            self._queue(frame, label)

    def _add_archive(self, file: UploadedFile, name: str, progress: Progress | None) -> None:
        max_mb = settings.DIAGNOSIS_MAX_ARCHIVE_MB
        if file.size is not None and file.size > max_mb * 1024 * 1024:
            self._files_seen += 1
            self._reject(name, f"“{name}” is {file.size / 1024**2:.0f} MB; the limit for a .zip is {max_mb} MB.")
            return
        limits = archive_limits()
        try:
            members = iter_members(file, limits)
            first = next(members, None)
        except ArchiveError as exc:
            self._files_seen += 1
            self._reject(name, f"“{name}” was refused: {exc}.")
            return
        if progress is not None:
            file.seek(0)
            progress.total = (progress.total or 0) + count_files(file)
            progress.refresh()
        member = first
        while member is not None:
            self._add_member(member, f"{name}/{member.name}"[:255], limits)
            if progress is not None:
                progress.update(1)
            member = next(members, None)

    def _add_member(self, member, label: str, limits: ArchiveLimits) -> None:
        self._files_seen += 1
        if member.error:
            self._reject(label, f"“{label}” was refused: {member.error}.")
            return
        spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        upload = UploadedFile(file=spool, name=Path(member.name).name, size=0)
        try:
            upload.size = member.copy_to(spool, limits.max_member_bytes)
            spool.seek(0)
            head = spool.read(132)
            spool.seek(0)
            if is_zip(head):
                self._reject(label, f"“{label}” is an archive inside the archive; upload it on its own.")
            else:
                self._add_file(upload, label, head)
        except ArchiveError as exc:
            self._reject(label, f"“{label}” was refused: {exc}.")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            # Damaged member (CRC error, truncated), or a compression method we cannot read.
            self._reject(label, f"“{label}” could not be extracted from the archive ({exc}).")
        finally:
            if not self._holds(upload):
                upload.close()

    # ---------------------------------------------------------------- results
    def _reject(self, name: str, reason: str) -> None:
        entry = {"name": name, "outcome": Outcome.REJECTED, "reason": reason, "scan": None, "same_as": None}
        self._unsaved.append(entry)
        self.new_entries.append(entry)

    def _queue(self, scan: ValidatedScan, name: str) -> None:
        entry = {"name": name, "outcome": Outcome.ACCEPTED, "reason": "", "scan": None, "same_as": None}
        self._unsaved.append(entry)
        self.new_entries.append(entry)
        self._pending.append(_Pending(scan=scan, entry=entry))
        self._pending_bytes += scan.info.size_bytes
        if len(self._pending) >= FLUSH_COUNT or self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Store the pending images through ``do_add_scans`` and save the report so far."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending:
            try:
                result = do_add_scans(
                    case=self.case, scans=[item.scan for item in pending], user=self.batch.uploaded_by,
                    batch=self.batch,
                )
            except Exception:
                logger.exception("Bulk upload: storing %d scans of batch %s failed", len(pending), self.batch.pk)
                for item in pending:
                    item.entry.update(
                        outcome=Outcome.REJECTED,
                        reason=f"“{item.entry['name']}” could not be stored because of an internal error; "
                        "try it again.",
                    )
            else:
                self._apply(pending, result)
            finally:
                for item in pending:
                    item.scan.file.close()
        if self._unsaved or self._files_seen:
            do_record_upload_report(batch=self.batch, entries=self._unsaved, files_received=self._files_seen)
            self._unsaved, self._files_seen = [], 0

    @staticmethod
    def _apply(pending: list[_Pending], result) -> None:
        """Mark each pending entry accepted (first copy stored) or duplicate (same image already there)."""
        added = {scan.sha256: scan for scan in result.added}
        same_as = {scan.sha256: scan for _, scan in result.duplicates} | added
        claimed: set[str] = set()
        for item in pending:
            sha256 = item.scan.info.sha256
            if sha256 in added and sha256 not in claimed:
                claimed.add(sha256)
                item.entry["scan"] = str(added[sha256].pk)
                continue
            existing = same_as.get(sha256)
            item.entry.update(
                outcome=Outcome.DUPLICATE,
                same_as=str(existing.pk) if existing else None,
                reason=(
                    f"“{item.entry['name']}” is the same image as “{existing.original_name}”, already on this case."
                    if existing
                    else f"“{item.entry['name']}” is already on this case."
                ),
            )

    def finish(self, *, complete: bool = True) -> UploadBatch:
        """Store what is pending and save the report; ``complete`` marks the batch finished."""
        self.flush()
        if complete:
            do_record_upload_report(batch=self.batch, entries=[], files_received=0, finished=True)
        self.batch.refresh_from_db()
        return self.batch
