"""Top-level URLs. Each app is included under its own namespace.

There is deliberately no route for MEDIA_URL: scans are served only by
``diagnosis:scan-file`` after an access check. ``/health/`` is public: monitoring
has no account.
"""
from django.contrib import admin
from django.urls import include, path

from portal.health import health

admin.site.site_header = "NeuroScan Portal administration"
admin.site.site_title = "NeuroScan admin"
admin.site.index_title = "Manage the portal"

urlpatterns = [
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("", include("diagnosis.urls")),
]
