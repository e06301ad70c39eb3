"""The zip limits of bulk uploads come from the environment, through portal/settings.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diagnosis.archives import ArchiveError, count_files, iter_members
from diagnosis.bulk import archive_limits
from tests.factories import image_bytes, zip_bytes

REPO = Path(__file__).resolve().parents[2]


def settings_in_a_fresh_process(**env) -> dict:
    """Import portal.settings with ``env`` and return the bulk upload limits it sets."""
    code = (
        "import json, portal.settings as s; print(json.dumps({k: getattr(s, k) for k in dir(s) "
        "if k.startswith(('DIAGNOSIS_MAX_DICOM', 'DIAGNOSIS_MAX_ARCHIVE', 'DIAGNOSIS_ARCHIVE'))}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_defaults_are_generous_but_bounded():
    values = settings_in_a_fresh_process()
    assert values == {
        "DIAGNOSIS_MAX_DICOM_MB": 100,
        "DIAGNOSIS_MAX_ARCHIVE_MB": 2048,
        "DIAGNOSIS_ARCHIVE_MAX_MEMBERS": 2000,
        "DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB": 4096,
        "DIAGNOSIS_ARCHIVE_MAX_RATIO": 100,
    }


def test_the_environment_sets_them():
    values = settings_in_a_fresh_process(
        DIAGNOSIS_ARCHIVE_MAX_MEMBERS="10", DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB="5", DIAGNOSIS_ARCHIVE_MAX_RATIO="20",
        DIAGNOSIS_MAX_ARCHIVE_MB="50", DIAGNOSIS_MAX_DICOM_MB="30",
    )
    assert values["DIAGNOSIS_ARCHIVE_MAX_MEMBERS"] == 10 and values["DIAGNOSIS_ARCHIVE_MAX_RATIO"] == 20
    assert values["DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB"] == 5 and values["DIAGNOSIS_MAX_ARCHIVE_MB"] == 50
    assert values["DIAGNOSIS_MAX_DICOM_MB"] == 30


def test_a_non_number_is_a_configuration_error():
    with pytest.raises(subprocess.CalledProcessError) as failure:
        settings_in_a_fresh_process(DIAGNOSIS_ARCHIVE_MAX_MEMBERS="lots")
    assert "DIAGNOSIS_ARCHIVE_MAX_MEMBERS must be an integer" in failure.value.stderr


def test_archive_limits_follow_the_settings(settings):
    settings.DIAGNOSIS_ARCHIVE_MAX_MEMBERS = 7
    settings.DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB = 3
    settings.DIAGNOSIS_ARCHIVE_MAX_RATIO = 9
    settings.DIAGNOSIS_MAX_SCAN_MB = 2
    settings.DIAGNOSIS_MAX_DICOM_MB = 4
    limits = archive_limits()
    assert (limits.max_members, limits.max_total_bytes, limits.max_ratio) == (7, 3 * 1024**2, 9.0)
    # A member may be as large as the largest single file the upload accepts.
    assert limits.max_member_bytes == 4 * 1024**2


def test_the_total_uncompressed_size_limit_refuses_the_whole_archive(settings, tmp_path):
    settings.DIAGNOSIS_ARCHIVE_MAX_TOTAL_MB = 1
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes([("a.bin", os.urandom(700_000)), ("b.bin", os.urandom(700_000))]))
    with archive.open("rb") as handle, pytest.raises(ArchiveError, match="expands to 1 MB; the limit is 1 MB"):
        next(iter_members(handle, archive_limits()))


def test_count_files_matches_what_iter_members_yields(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes([
        ("a.png", image_bytes()), ("__MACOSX/._a.png", b"x"), (".hidden", b"x"), ("../up.png", b"x"), ("d/b.png", b"x"),
    ]))
    with archive.open("rb") as handle:
        assert count_files(handle) == len(list(iter_members(handle))) == 3
