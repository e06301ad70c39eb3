"""Serve the portal with its background services, in the foreground, until Ctrl-C.

``bin/run`` ends with this command. Today it runs one service, gunicorn. The
analysis pipeline adds an embedded Redis and a Celery worker by returning more
``Service`` entries from ``Command.services()``; the supervisor below already
starts them in order, stops them all when one exits, and forwards Ctrl-C.
"""
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import Q

from accounts.models import User

STOP_TIMEOUT_S = 15


@dataclass
class Service:
    """One child process run by ``runportal``."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: inherit this process's environment
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=settings.BASE_DIR)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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
    help = "Serve the portal with gunicorn on PORTAL_HOST:PORTAL_PORT until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.PORTAL_HOST)
        parser.add_argument("--port", type=int, default=settings.PORTAL_PORT)
        parser.add_argument("--workers", type=int, default=settings.PORTAL_WEB_WORKERS)

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        services = self.services(host=host, port=port, workers=workers)
        self.print_banner(host=host, port=port)
        sys.exit(supervise(services))

    def services(self, *, host: str, port: int, workers: int) -> list[Service]:
        """The processes that make up a running portal, in start order."""
        return [self.web(host=host, port=port, workers=workers)]

    def web(self, *, host: str, port: int, workers: int) -> Service:
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return Service(
            name="web",
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
        self.stdout.write("  Press Ctrl-C to stop.")
        self.stdout.write(line)
