"""`manage.py runportal`: what it starts, and that it stops everything together."""
import sys

from diagnosis.management.commands.runportal import Command, Service, supervise


def test_it_serves_with_gunicorn_on_the_configured_address():
    (web,) = Command().services(host="127.0.0.1", port=8123, workers=3)
    assert web.argv[:4] == [sys.executable, "-m", "gunicorn", "portal.wsgi:application"]
    assert web.argv[web.argv.index("--bind") + 1] == "127.0.0.1:8123"
    assert web.argv[web.argv.index("--workers") + 1] == "3"


def test_ipv6_addresses_are_bracketed():
    (web,) = Command().services(host="::1", port=8000, workers=1)
    assert web.argv[web.argv.index("--bind") + 1] == "[::1]:8000"


def test_when_one_service_exits_the_others_are_stopped():
    sleeper = Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    failing = Service("failing", [sys.executable, "-c", "raise SystemExit(3)"])

    status = supervise([sleeper, failing])

    assert status == 3
    assert not sleeper.running()
