"""Bulk upload benchmark: a 200-slice study through the HTTP layer until every slice is analysed.

    python bench/bulk_upload.py [--slices 200] [--size 256] [--images DIR] [--stub | --untrained-model]
                                [--model-dir DIR] [--no-warm-up] [--json FILE] [--keep]

Starts a private portal stack in a temporary folder with ``manage.py runportal``
(embedded Redis, gunicorn, one Celery worker, celery beat) on a free localhost
port, with its own SQLite database and media folder. Signs in as a technician,
uploads the study as one .zip to the bulk upload endpoint, then polls the batch's
progress endpoint until every slice is analysed. Reports:

- upload time: from sending the request to the per-file report (transfer,
  validation, storage and queueing of every slice);
- time until all analyses are done, from the start of the upload;
- slices per second, end to end;
- the Celery worker's peak resident memory (worker process plus its pool
  children, sampled with psutil every 100 ms).

The study is synthetic by default: 16-bit MR DICOM slices of a phantom, written
here with pydicom. ``--images DIR`` uploads the first N PNG/JPEG files of DIR
instead (real slices stay where they are; nothing is copied into the repository).
The worker uses the shipped model (``--model-dir``, default ``mlcore/artifacts``);
``--untrained-model`` gives it the same network with random weights (the real
TensorFlow cost, before a model is shipped); without a model, or with ``--stub``,
it uses the test suite's stub predictor, so the numbers then measure the pipeline
and not TensorFlow. By default one slice is analysed first, so the
model load is reported on its own and the study is timed against a warm worker.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "bench-password-not-secret-1"
PATIENT_ID = "MRN-BENCH"
STUB_PREDICTOR = "tests.resources.stub_predictor.get_stub_predictor"


# ---------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------
def dicom_slice(index: int, count: int, *, size: int, study_uid: str, series_uid: str) -> bytes:
    """One 16-bit MR slice of a phantom head: an ellipse of 'tissue' with a bright lesion
    whose size varies along the series, plus noise, as a DICOM Part 10 file."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    z = index / max(1, count - 1) - 0.5
    head = (xx / 0.38) ** 2 + (yy / 0.45) ** 2 < 1 - (2 * z) ** 2 * 0.8
    lesion = (xx - 0.1) ** 2 + (yy + 0.05) ** 2 < (0.08 * (1 - abs(2 * z))) ** 2
    pixels = head * 1200 + lesion * 1500 + rng.normal(0, 40, (size, size)) * head
    pixels = np.clip(pixels, 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.SeriesDescription = "MR", "BENCH T1 AX"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = PATIENT_ID, "Bench^Phantom", "19700101", "O"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, 1.5 * index]
    ds.SliceLocation = 1.5 * index
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 1400, 2800
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def study_zip(*, slices: int, size: int, images: Path | None) -> tuple[bytes, str]:
    """The study as one .zip in memory, and a description of it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if images is not None:
            files = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:slices]
            if len(files) < slices:
                raise SystemExit(f"{images} holds only {len(files)} PNG/JPEG files; {slices} needed")
            for number, path in enumerate(files):
                archive.write(path, f"study/{number:04d}{path.suffix.lower()}")
            description = f"{slices} real PNG/JPEG slices from {images}"
        else:
            from pydicom.uid import generate_uid

            study_uid, series_uid = generate_uid(), generate_uid()
            for index in range(slices):
                data = dicom_slice(index, slices, size=size, study_uid=study_uid, series_uid=series_uid)
                archive.writestr(f"study/SE1/IM{index + 1:04d}.dcm", data)
            description = f"{slices} synthetic 16-bit MR DICOM slices of {size}x{size}"
    return out.getvalue(), description


# ---------------------------------------------------------------------------
# The portal stack
# ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_shipped_model(model_dir: Path) -> bool:
    return (model_dir / "model_card.json").is_file()


def untrained_model(folder: Path) -> Path:
    """The shipped network's architecture with random weights, and a model card for it.

    Same layers, so the same forward-pass cost and worker memory as the trained
    model; its answers mean nothing. For timing the pipeline before a model is shipped.
    """
    from mlcore.constants import CLASS_NAMES, IMAGE_SIZE, PRESENCE_LABELS
    from mlcore.network import build_network, save_weights

    folder.mkdir(parents=True, exist_ok=True)
    sha256 = save_weights(build_network(weights=None, image_size=IMAGE_SIZE), folder / "weights.npz")
    card = {
        "name": "xception-untrained-bench", "version": "bench", "weights_file": "weights.npz",
        "weights_sha256": sha256, "image_size": IMAGE_SIZE, "class_names": list(CLASS_NAMES),
        "presence_labels": list(PRESENCE_LABELS), "test_time_augmentation": "none",
    }
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    return folder


def prepare_database() -> dict[str, str]:
    """Migrate the private database and create the technician, patient and cases."""
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import User
    from diagnosis.models import Patient
    from diagnosis.services import do_create_case

    call_command("migrate", verbosity=0)
    user = User.objects.create(username="bench-tech", role=User.Role.TECHNICIAN)
    user.set_password(PASSWORD)
    user.save()
    patient = Patient.objects.create(
        record_id=PATIENT_ID, name="Bench Phantom", birth_date="1970-01-01", sex="O", created_by=user
    )
    cases = {
        name: str(do_create_case(patient=patient, user=user, clinical_question=f"Benchmark: {name}").pk)
        for name in ("warm-up", "study")
    }
    return cases


class WorkerMemory(threading.Thread):
    """Samples the resident memory of the Celery worker(s) under ``root`` every 100 ms."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peak_total = 0  # worker main process + pool children
        self.peak_single = 0
        self.stop_event = threading.Event()

    def workers(self):
        import psutil

        try:
            children = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for process in children:
            try:
                cmdline = process.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "celery" in " ".join(cmdline) and "worker" in cmdline:
                found.append(process)
        return found

    def run(self) -> None:
        import psutil

        while not self.stop_event.is_set():
            total = 0
            for process in self.workers():
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak_single = max(self.peak_single, rss)
            self.peak_total = max(self.peak_total, total)
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


class Portal:
    """``manage.py runportal`` in a child process, with a requests session signed in."""

    def __init__(self, *, env: dict, port: int, log_path: Path):
        self.env, self.port, self.log_path = env, port, log_path
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runportal", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"runportal exited with {self.process.returncode}; see {self.log_path}")
            try:
                health = requests.get(f"{self.base}/health/", timeout=5)
                if health.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the portal was not healthy within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def session(self):
        import requests

        session = requests.Session()
        login = f"{self.base}/accounts/login/"
        session.get(login, timeout=30)
        response = session.post(
            login,
            data={"username": "bench-tech", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            timeout=30,
        )
        if "/accounts/login/" in response.url:
            raise SystemExit("could not sign in to the benchmark portal")
        return session

    def upload(self, session, case_pk: str, name: str, data: bytes) -> dict:
        url = f"{self.base}/cases/{case_pk}/uploads/new/"
        session.get(url, timeout=30)  # the page sets the CSRF cookie, as for a browser
        token = session.cookies["csrftoken"]
        response = session.post(
            url,
            files={"files": (name, data, "application/zip")},
            data={"csrfmiddlewaretoken": token, "finish": "on"},
            headers={"Accept": "application/json", "X-CSRFToken": token},
            timeout=600,
        )
        response.raise_for_status()
        return response.json()

    def wait_until_analysed(self, session, batch: str, timeout: float) -> dict:
        url = f"{self.base}/uploads/{batch}/progress/"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            progress = session.get(url, headers={"Accept": "application/json"}, timeout=30).json()
            if progress["finished"]:
                return progress
            time.sleep(0.25)
        raise SystemExit(f"the analysis did not finish within {timeout:.0f} s (last: {progress})")


# ---------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="Synthetic slice size in pixels (default 256).")
    parser.add_argument("--images", type=Path, help="Upload the first N PNG/JPEG files of this folder instead.")
    parser.add_argument("--stub", action="store_true", help="Use the stub predictor (no TensorFlow).")
    parser.add_argument(
        "--untrained-model", action="store_true",
        help="Use the network with random weights (real TensorFlow cost, meaningless answers).",
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "mlcore" / "artifacts")
    parser.add_argument("--no-warm-up", action="store_true", help="Time the study against a cold worker.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds to wait for the analyses.")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary portal folder.")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="neuroscan-bench-"))
    if args.untrained_model:
        print("building an untrained network for the worker…", flush=True)
        args.model_dir = untrained_model(workdir / "model")
    stub = args.stub or not has_shipped_model(args.model_dir)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_VAR_DIR": str(workdir / "var"),
        "MEDIA_ROOT": str(workdir / "media"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "DEBUG": "false",
        "HTTPS": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "MLCORE_MODEL_DIR": str(args.model_dir),
        "PYTHONPATH": str(REPO),
    }
    # The private database lives in PORTAL_VAR_DIR; an inherited path would point elsewhere.
    env.pop("SQLITE_PATH", None)
    if stub:
        env["MLCORE_PREDICTOR"] = STUB_PREDICTOR
    os.environ.clear()
    os.environ.update(env)

    print(f"portal folder: {workdir}")
    print("building the study…", flush=True)
    data, description = study_zip(slices=args.slices, size=args.size, images=args.images)
    cases = prepare_database()
    portal = Portal(env=env, port=free_port(), log_path=workdir / "portal.log")
    results: dict = {
        "study": description,
        "zip_mb": round(len(data) / 1024**2, 2),
        "predictor": (
            "stub (no TensorFlow)" if stub
            else "untrained network (real TensorFlow cost)" if args.untrained_model
            else f"model in {args.model_dir}"
        ),
    }
    try:
        print(f"starting the portal stack on {portal.base} (runportal: redis, gunicorn, worker, beat)…", flush=True)
        started = time.perf_counter()
        portal.start()
        results["stack_start_s"] = round(time.perf_counter() - started, 2)
        memory = WorkerMemory(portal.process.pid)
        memory.start()
        session = portal.session()

        if not args.no_warm_up:
            warm_zip, _ = study_zip(slices=1, size=args.size, images=args.images)
            began = time.perf_counter()
            warm = portal.upload(session, cases["warm-up"], "warm-up.zip", warm_zip)
            portal.wait_until_analysed(session, warm["batch"], args.timeout)
            results["first_analysis_s"] = round(time.perf_counter() - began, 2)

        print(f"uploading {description} ({results['zip_mb']} MB zip)…", flush=True)
        began = time.perf_counter()
        answer = portal.upload(session, cases["study"], "study.zip", data)
        upload_s = time.perf_counter() - began
        progress = portal.wait_until_analysed(session, answer["batch"], args.timeout)
        done_s = time.perf_counter() - began
        memory.stop()

        results.update(
            accepted=answer["accepted"],
            rejected=answer["rejected"],
            duplicates=answer["duplicates"],
            analysed=progress["done"],
            failed=progress["failed"],
            upload_s=round(upload_s, 2),
            all_analysed_s=round(done_s, 2),
            analysis_after_upload_s=round(done_s - upload_s, 2),
            slices_per_s=round(answer["accepted"] / done_s, 2) if done_s else None,
            upload_slices_per_s=round(answer["accepted"] / upload_s, 2) if upload_s else None,
            worker_peak_rss_mb=round(memory.peak_total / 1024**2),
            worker_peak_single_process_rss_mb=round(memory.peak_single / 1024**2),
        )
    finally:
        portal.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    width = max(len(key) for key in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
