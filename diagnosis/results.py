"""What the case page shows of the automatic analysis: progress, then results per scan.

Read-only; every change to runs and predictions goes through diagnosis.services.
"""
from dataclasses import dataclass, field

from diagnosis.models import AnalysisRun, Case, Prediction, Scan


@dataclass
class ScanResult:
    """The latest analysis of one scan: one prediction per stage (None if never queued)."""

    scan: Scan
    run: AnalysisRun | None = None
    presence: Prediction | None = None
    type: Prediction | None = None

    @property
    def predictions(self) -> list[Prediction]:
        return [p for p in (self.presence, self.type) if p is not None]

    @property
    def model(self) -> Prediction | None:
        """A finished prediction to read the model name, version and hash from."""
        return next((p for p in self.predictions if p.model_version), None)

    @property
    def seconds(self) -> float | None:
        times = [p.seconds for p in self.predictions if p.seconds is not None]
        return sum(times) if times else None


@dataclass
class EarlierRun:
    """A run whose results were superseded by a later one, kept for the history."""

    run: AnalysisRun
    predictions: list[Prediction] = field(default_factory=list)

    @property
    def model_version(self) -> str:
        return next((f"{p.model_name} {p.model_version}" for p in self.predictions if p.model_version), "")


@dataclass
class CaseAnalysis:
    results: list[ScanResult]
    earlier_runs: list[EarlierRun]
    outstanding: int  # predictions still waiting or running
    total: int  # predictions of the runs still in progress
    delayed: bool  # work exists that never reached the broker

    @property
    def in_progress(self) -> bool:
        return self.outstanding > 0

    @property
    def done(self) -> int:
        return self.total - self.outstanding

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0

    @property
    def has_results(self) -> bool:
        return any(p.succeeded for r in self.results for p in r.predictions)


def case_analysis(case: Case) -> CaseAnalysis:
    """Progress and per-scan results of ``case``'s analysis, for the case and review pages.

    Each scan shows the predictions of the latest run that included it; runs whose
    every scan was analysed again later are listed as earlier runs.
    """
    scans = list(case.scans.all())
    runs = list(case.analysis_runs.order_by("created"))
    predictions = list(
        Prediction.objects.filter(run__case=case).select_related("run").order_by("run__created", "stage")
    )
    latest_run_of_scan: dict = {}
    for prediction in predictions:
        latest_run_of_scan[prediction.scan_id] = prediction.run
    results = {scan.pk: ScanResult(scan=scan, run=latest_run_of_scan.get(scan.pk)) for scan in scans}
    earlier: dict = {run.pk: EarlierRun(run=run) for run in runs}
    for prediction in predictions:
        result = results.get(prediction.scan_id)
        if result is not None and result.run is not None and result.run.pk == prediction.run_id:
            setattr(result, prediction.stage, prediction)
        else:
            earlier[prediction.run_id].predictions.append(prediction)
    active_runs = {p.run_id for p in predictions if p.status in Prediction.OUTSTANDING}
    active = [p for p in predictions if p.run_id in active_runs]
    outstanding = [p for p in active if p.status in Prediction.OUTSTANDING]
    delayed = any(run.pk in active_runs and run.enqueued_at is None and run.started_at is None for run in runs)
    scan_names = {scan.pk: scan for scan in scans}
    for item in earlier.values():
        for prediction in item.predictions:
            prediction.scan = scan_names.get(prediction.scan_id, prediction.scan)
    return CaseAnalysis(
        results=list(results.values()),
        earlier_runs=[item for item in reversed(earlier.values()) if item.predictions],
        outstanding=len(outstanding),
        total=len(active),
        delayed=delayed,
    )
