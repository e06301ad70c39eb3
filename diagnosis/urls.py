from django.urls import path

from diagnosis import views

app_name = "diagnosis"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("patients/", views.PatientListView.as_view(), name="patient-list"),
    path("patients/new/", views.PatientCreateView.as_view(), name="patient-create"),
    path("patients/<uuid:pk>/", views.PatientDetailView.as_view(), name="patient-detail"),
    path("patients/<uuid:pk>/edit/", views.PatientUpdateView.as_view(), name="patient-update"),
    path("cases/", views.CaseListView.as_view(), name="case-list"),
    path("cases/new/", views.CaseCreateView.as_view(), name="case-create"),
    path("cases/<uuid:pk>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<uuid:pk>/edit/", views.CaseUpdateView.as_view(), name="case-update"),
    path("cases/<uuid:pk>/scans/upload/", views.ScanUploadView.as_view(), name="scan-upload"),
    path("cases/<uuid:pk>/review/", views.ReviewCreateView.as_view(), name="review-create"),
    path("cases/<uuid:pk>/analysis/", views.CaseAnalysisView.as_view(), name="case-analysis"),
    path("cases/<uuid:pk>/analysis/rerun/", views.AnalysisRerunView.as_view(), name="analysis-rerun"),
    path("cases/<uuid:pk>/uploads/new/", views.BulkUploadView.as_view(), name="bulk-upload"),
    path("cases/<uuid:pk>/uploads/progress/", views.CaseUploadProgressView.as_view(), name="case-upload-progress"),
    path("uploads/", views.UploadBatchListView.as_view(), name="upload-list"),
    path("uploads/<uuid:pk>/", views.UploadBatchDetailView.as_view(), name="upload-detail"),
    path("uploads/<uuid:pk>/progress/", views.UploadBatchProgressView.as_view(), name="upload-progress"),
    path("patients/new/from-dicom/", views.PatientFromDicomView.as_view(), name="patient-from-dicom"),
    path("scans/<uuid:pk>/file/", views.ScanFileView.as_view(), name="scan-file"),
    path("scans/<uuid:pk>/thumbnail/", views.ScanThumbnailView.as_view(), name="scan-thumbnail"),
]
