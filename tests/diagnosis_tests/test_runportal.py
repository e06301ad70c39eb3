"""`manage.py runportal`: what it starts, and that it stops everything together."""
import sys

import pytest

from diagnosis.management.commands.runportal import Command, RedisService, Service, supervise


def by_name(services) -> dict[str, Service]:
    return {service.name: service for service in services}


@pytest.fixture
def embedded(settings, tmp_path):
    """No CELERY_BROKER_URL: runportal brings its own Redis."""
    settings.CELERY_BROKER_URL = ""
    settings.EMBEDDED_REDIS_DIR = tmp_path / "redis"
    return settings


def test_it_serves_with_gunicorn_on_the_configured_address(embedded):
    web = by_name(Command().services(host="127.0.0.1", port=8123, workers=3))["web"]
    assert web.argv[:4] == [sys.executable, "-m", "gunicorn", "portal.wsgi:application"]
    assert web.argv[web.argv.index("--bind") + 1] == "127.0.0.1:8123"
    assert web.argv[web.argv.index("--workers") + 1] == "3"


def test_ipv6_addresses_are_bracketed(embedded):
    web = by_name(Command().services(host="::1", port=8000, workers=1))["web"]
    assert web.argv[web.argv.index("--bind") + 1] == "[::1]:8000"


def test_without_a_broker_url_it_runs_an_embedded_redis_first_and_points_everyone_at_it(embedded):
    services = Command().services(host="127.0.0.1", port=8000, workers=1)

    assert [s.name for s in services] == ["redis", "web", "worker", "beat"]
    redis = services[0]
    assert isinstance(redis, RedisService)
    assert redis.server.socket_path == embedded.EMBEDDED_REDIS_DIR / "redis.sock"
    assert not redis.running()  # building the list starts nothing
    for service in services[1:]:
        assert service.env["CELERY_BROKER_URL"] == f"redis+socket://{embedded.EMBEDDED_REDIS_DIR}/redis.sock"


def test_with_a_broker_url_it_uses_that_redis(settings):
    settings.CELERY_BROKER_URL = "redis://broker.example:6379/0"
    services = by_name(Command().services(host="127.0.0.1", port=8000, workers=1))

    assert set(services) == {"web", "worker", "beat"}
    assert services["worker"].env["CELERY_BROKER_URL"] == "redis://broker.example:6379/0"


def test_the_worker_takes_one_analysis_at_a_time_from_both_queues(embedded):
    worker = by_name(Command().services(host="127.0.0.1", port=8000, workers=1))["worker"]
    assert worker.argv[:6] == [sys.executable, "-m", "celery", "-A", "portal", "worker"]
    assert worker.argv[worker.argv.index("-Q") + 1] == "inference,celery"
    assert worker.argv[worker.argv.index("-c") + 1] == "1"
    assert worker.argv[worker.argv.index("--prefetch-multiplier") + 1] == "1"


def test_beat_keeps_its_schedule_in_the_var_folder(embedded):
    beat = by_name(Command().services(host="127.0.0.1", port=8000, workers=1))["beat"]
    assert beat.argv[5] == "beat"
    assert beat.argv[beat.argv.index("--schedule") + 1] == str(embedded.VAR_DIR / "celerybeat-schedule")


def test_when_one_service_exits_the_others_are_stopped():
    sleeper = Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    failing = Service("failing", [sys.executable, "-c", "raise SystemExit(3)"])

    status = supervise([sleeper, failing])

    assert status == 3
    assert not sleeper.running()


def test_the_embedded_redis_is_started_and_stopped_with_the_others(tmp_path):
    from portal.embedded_redis import EmbeddedRedis

    redis = RedisService(name="redis", argv=[], server=EmbeddedRedis(tmp_path / "redis", persist=False))
    failing = Service("failing", [sys.executable, "-c", "raise SystemExit(4)"])

    assert supervise([redis, failing]) == 4
    assert not redis.running()
    assert not redis.server.ping()
