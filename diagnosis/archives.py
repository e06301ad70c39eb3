"""Reading uploaded .zip studies without trusting them.

A zip can claim any name (``../../etc/passwd``, ``/abs/path``), any size, and can
expand a few kilobytes into gigabytes. Members are checked against the central
directory first (count, declared total size, per-member compression ratio, names),
then read through a counting stream that stops at the declared size, because the
declared sizes themselves can lie.
"""
from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Iterator


class ArchiveError(ValueError):
    """The whole archive is refused (not a zip, too many members, too large)."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 2000
    max_total_bytes: int = 2 * 1024**3
    max_member_bytes: int = 100 * 1024**2
    # Image and DICOM data rarely compresses beyond ~20:1; 100:1 is a bomb.
    max_ratio: float = 100.0


@dataclass
class ArchiveMember:
    """One file of the archive: either readable (``open()``) or rejected with ``error``."""

    name: str
    size: int
    error: str = ""
    _archive: zipfile.ZipFile | None = None
    _info: zipfile.ZipInfo | None = None

    def read(self, limit: int) -> bytes:
        """The member's bytes; refuses to produce more than ``limit`` or than declared."""
        cap = min(limit, self.size)
        with self._archive.open(self._info) as stream:
            data = stream.read(cap + 1)
        if len(data) > cap:
            raise ArchiveError(f"{self.name}: expands beyond its declared size (zip bomb)")
        return data

    def copy_to(self, destination: BinaryIO, limit: int, chunk_size: int = 1024 * 1024) -> int:
        """Stream the member into ``destination`` a chunk at a time; returns the bytes written.

        Same caps as :meth:`read`, without holding the whole member in memory.
        """
        cap = min(limit, self.size)
        written = 0
        with self._archive.open(self._info) as stream:
            while chunk := stream.read(min(chunk_size, cap + 1 - written)):
                written += len(chunk)
                if written > cap:
                    raise ArchiveError(f"{self.name}: expands beyond its declared size (zip bomb)")
                destination.write(chunk)
        return written


def safe_member_name(raw: str) -> str | None:
    """A relative POSIX path inside the archive, or None if it would escape it."""
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        return None
    return str(path)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _skipped(name: str) -> bool:
    """Folders and OS clutter (macOS resource forks, Thumbs.db) are not study files."""
    parts = PurePosixPath(name).parts
    return name.endswith("/") or any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in (
        "Thumbs.db", "desktop.ini", "DICOMDIR")


def iter_members(fileobj: BinaryIO, limits: ArchiveLimits = ArchiveLimits()) -> Iterator[ArchiveMember]:
    """Yield each file of the zip in order, rejected members carrying an ``error``.

    Raises ArchiveError before yielding anything when the archive as a whole is
    unacceptable, so a refused archive stores nothing.
    """
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"not a readable zip archive ({exc})") from exc
    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > limits.max_members:
        raise ArchiveError(f"archive has {len(infos)} files; the limit is {limits.max_members}")
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"archive expands to {total / 1024**2:.0f} MB; the limit is {limits.max_total_bytes / 1024**2:.0f} MB")
    for info in infos:
        name = safe_member_name(info.filename)
        if name is None:
            yield ArchiveMember(info.filename, info.file_size, "unsafe path in archive (outside the archive folder)")
            continue
        if _skipped(name):
            continue
        if _is_symlink(info):
            yield ArchiveMember(name, info.file_size, "symbolic links are not accepted")
        elif info.flag_bits & 0x1:
            yield ArchiveMember(name, info.file_size, "encrypted archive members are not supported")
        elif info.file_size > limits.max_member_bytes:
            yield ArchiveMember(name, info.file_size, f"file expands to {info.file_size / 1024**2:.0f} MB; "
                                f"the limit is {limits.max_member_bytes / 1024**2:.0f} MB")
        elif info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            yield ArchiveMember(name, info.file_size, f"compression ratio {info.file_size / info.compress_size:.0f}:1 "
                                "looks like a zip bomb")
        else:
            yield ArchiveMember(name, info.file_size, _archive=archive, _info=info)


def count_files(fileobj: BinaryIO) -> int:
    """How many members :func:`iter_members` yields (for progress bars); 0 if not a zip."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError):
        return 0
    count = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = safe_member_name(info.filename)
        count += name is None or not _skipped(name)
    return count


def is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
