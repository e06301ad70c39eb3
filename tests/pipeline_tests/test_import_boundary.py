"""The web side never loads TensorFlow or the model: only a worker's task does."""
import subprocess
import sys

from django.conf import settings

CHECK = """
import sys
import django
django.setup()
from django.urls import resolve
import portal.urls, diagnosis.views, diagnosis.services, diagnosis.tasks, mlcore.tasks, portal.health
resolve("/")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras")
                or name in ("mlcore.inference", "mlcore.network"))
print(loaded)
"""


def test_importing_the_web_code_and_the_tasks_loads_no_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=settings.BASE_DIR,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
