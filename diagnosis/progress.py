"""How far the automatic analysis of an upload batch has got: n of N scans done, failures.

Read from the analysis pipeline's ``Prediction`` rows. A scan counts as *done*
once every stage of its latest analysis run has a final result, and as *failed*
if any of them is a failure. A re-run of the analysis starts a new run, so a
batch shows its progress again while the re-run is under way.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from django.db.models import Count

from diagnosis.models import Prediction, Scan, UploadBatch


@dataclass(frozen=True)
class BatchProgress:
    """Analysis progress over the scans of one batch."""

    total: int = 0
    done: int = 0  # finished, successfully or not
    failed: int = 0
    running: int = 0

    @property
    def succeeded(self) -> int:
        return self.done - self.failed

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.running

    @property
    def finished(self) -> bool:
        """True when nothing is left to analyse (also for a batch with no scans)."""
        return self.done >= self.total

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    @property
    def succeeded_percent(self) -> float:
        return 100 * self.succeeded / self.total if self.total else 0.0

    @property
    def failed_percent(self) -> float:
        return 100 * self.failed / self.total if self.total else 0.0

    @property
    def context(self) -> str:
        """Bootstrap colour: red once anything failed, green when all done, blue meanwhile."""
        if self.failed:
            return "danger"
        return "success" if self.finished else "primary"

    def as_dict(self) -> dict:
        return {
            "total": self.total, "done": self.done, "failed": self.failed, "running": self.running,
            "waiting": self.waiting, "finished": self.finished, "percent": self.percent,
        }


def batch_progress(batches: Iterable[UploadBatch]) -> dict[UUID, BatchProgress]:
    """Progress of each batch, keyed by batch id, in two queries whatever the batch sizes."""
    ids = [batch.pk for batch in batches]
    totals = dict(
        Scan.objects.filter(upload_batch__in=ids)
        .values_list("upload_batch")
        .annotate(n=Count("id"))
        .order_by()
    )
    # (batch, scan) -> statuses of the scan's predictions in its latest run
    latest_run: dict[tuple[UUID, UUID], tuple] = {}
    statuses: dict[tuple[UUID, UUID], list[str]] = defaultdict(list)
    rows = Prediction.objects.filter(scan__upload_batch__in=ids).values_list(
        "scan__upload_batch", "scan", "run__created", "run", "status"
    )
    for batch_id, scan_id, run_created, run_id, status in rows.order_by():
        key = (batch_id, scan_id)
        run_key = (run_created, run_id)
        current = latest_run.get(key)
        if current is None or run_key > current:
            latest_run[key] = run_key
            statuses[key] = [status]
        elif run_key == current:
            statuses[key].append(status)

    done: dict[UUID, int] = defaultdict(int)
    failed: dict[UUID, int] = defaultdict(int)
    running: dict[UUID, int] = defaultdict(int)
    for (batch_id, _), scan_statuses in statuses.items():
        if all(status in (Prediction.Status.SUCCESS, Prediction.Status.FAILURE) for status in scan_statuses):
            done[batch_id] += 1
            failed[batch_id] += Prediction.Status.FAILURE in scan_statuses
        elif Prediction.Status.STARTED in scan_statuses or Prediction.Status.SUCCESS in scan_statuses:
            running[batch_id] += 1
    return {
        pk: BatchProgress(
            total=totals.get(pk, 0), done=done[pk], failed=failed[pk], running=running[pk]
        )
        for pk in ids
    }


def progress_of(batch: UploadBatch) -> BatchProgress:
    """Progress of one batch."""
    return batch_progress([batch])[batch.pk]


def case_uploads_context(case, *, limit: int = 5) -> dict:
    """Template context for the case page's "Uploads" card: recent batches and their progress."""
    batches = list(case.upload_batches.select_related("uploaded_by").defer("report")[:limit])
    progress = batch_progress(batches)
    rows = [(batch, progress[batch.pk]) for batch in batches]
    return {
        "case": case,
        "rows": rows,
        "polling": any(not p.finished for _, p in rows),
        "more": len(batches) == limit and case.upload_batches.count() > limit,
    }
