"""Large uploads are processed as streams: nothing holds a whole upload or archive in memory."""
import os
import tracemalloc
import zipfile

from django.core.files.uploadedfile import TemporaryUploadedFile

from diagnosis.bulk import StudyImporter
from diagnosis.models import UploadBatch
from diagnosis.services import do_create_upload_batch
from tests.factories import image_bytes, upload, zip_bytes


def test_a_large_request_reaches_the_importer_as_temporary_files(bulk_post, settings, monkeypatch):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    seen = []
    real = StudyImporter.add_upload

    def spy(self, file, **kwargs):
        seen.append(type(file))
        return real(self, file, **kwargs)

    monkeypatch.setattr(StudyImporter, "add_upload", spy)
    bulk_post(upload("study.zip", zip_bytes([(f"{i}.png", image_bytes(size=(256, 256), seed=i)) for i in range(40)])))
    assert seen == [TemporaryUploadedFile]
    assert UploadBatch.objects.get().accepted_count == 40


def test_a_big_archive_is_read_one_member_at_a_time(study_case, alice, tmp_path, settings):
    """80 MB of members (incompressible, 8 MB each) pass through with less memory than one member."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10):
            zf.writestr(f"raw/{i:02d}.bin", os.urandom(8 * 1024 * 1024))
        zf.writestr("raw/slice.png", image_bytes(seed=1))
    importer = StudyImporter(batch=do_create_upload_batch(case=study_case, user=alice))

    tracemalloc.start()
    try:
        importer.add_path(archive)
        batch = importer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (batch.accepted_count, batch.rejected_count) == (1, 10)
    # Reading any one member whole would already take 8 MB.
    assert peak < 7 * 1024 * 1024, f"peak {peak / 1024**2:.1f} MB"
