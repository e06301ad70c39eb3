"""Top-level URLs. Each app is included under its own namespace.

There is deliberately no route for MEDIA_URL: scans are served only by
``diagnosis:scan-file`` after an access check.
"""
from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "NeuroScan Portal administration"
admin.site.site_title = "NeuroScan admin"
admin.site.index_title = "Manage the portal"

urlpatterns = [
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("", include("diagnosis.urls")),
]
