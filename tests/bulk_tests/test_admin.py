"""Upload batches and DICOM scans in the Django admin: listed, readable, not editable."""
from diagnosis.models import Scan, UploadBatch
from tests.factories import make_dicom, png_upload, ramp, upload


def test_upload_batches_and_dicom_scans_show_in_the_admin(bulk_post, client_for, admin_user):
    bulk_post(upload("a.dcm", make_dicom(ramp())), png_upload("b.png"))
    batch, scan = UploadBatch.objects.get(), Scan.objects.get(format="DICOM")
    client = client_for(admin_user)

    assert client.get("/admin/diagnosis/uploadbatch/").status_code == 200
    change = client.get(f"/admin/diagnosis/uploadbatch/{batch.pk}/change/")
    assert change.status_code == 200 and "a.dcm" in change.content.decode()
    scan_page = client.get(f"/admin/diagnosis/scan/{scan.pk}/change/").content.decode()
    assert scan.series_uid in scan_page and "T1 AX POST" in scan_page
    # Reports are written by the upload code only.
    assert client.post(f"/admin/diagnosis/uploadbatch/{batch.pk}/change/", {}).status_code == 403
