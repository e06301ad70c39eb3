"""Metrics for both stages, computed the way the published system reports them."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from mlcore.constants import CLASS_NAMES, NORMAL_CLASS, PRESENCE_LABELS
from mlcore.preprocessing import UnreadableImageError, prepare_image


def compute_metrics(true_classes: np.ndarray, presence_probs: np.ndarray, class_probs: np.ndarray) -> dict:
    """Stage 1 and stage 2 metrics as fractions in [0, 1].

    Stage 1 treats "tumor" as the positive class (recall = share of tumors caught).
    Confusion matrices have true labels as rows and predictions as columns.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    true_classes = np.asarray(true_classes, dtype=int)
    normal = CLASS_NAMES.index(NORMAL_CLASS)
    true_presence = (true_classes != normal).astype(int)
    predicted_presence = np.argmax(presence_probs, axis=1) if len(presence_probs) else np.zeros(0, int)
    predicted_classes = np.argmax(class_probs, axis=1) if len(class_probs) else np.zeros(0, int)

    p, r, f, _ = precision_recall_fscore_support(
        true_presence, predicted_presence, average="binary", pos_label=1, zero_division=0
    )
    presence = {
        "accuracy": float(accuracy_score(true_presence, predicted_presence)) if len(true_presence) else 0.0,
        "precision": float(p), "recall": float(r), "f1": float(f),
        "confusion_matrix": confusion_matrix(true_presence, predicted_presence, labels=[0, 1]).tolist(),
        "labels": list(PRESENCE_LABELS),
    }
    label_ids = list(range(len(CLASS_NAMES)))
    pm, rm, fm, _ = precision_recall_fscore_support(
        true_classes, predicted_classes, labels=label_ids, average="macro", zero_division=0
    )
    pc, rc, fc, sc = precision_recall_fscore_support(
        true_classes, predicted_classes, labels=label_ids, average=None, zero_division=0
    )
    classification = {
        "accuracy": float(accuracy_score(true_classes, predicted_classes)) if len(true_classes) else 0.0,
        "precision_macro": float(pm), "recall_macro": float(rm), "f1_macro": float(fm),
        "per_class": {
            name: {"precision": float(pc[i]), "recall": float(rc[i]), "f1": float(fc[i]), "support": int(sc[i])}
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": confusion_matrix(true_classes, predicted_classes, labels=label_ids).tolist(),
        "labels": list(CLASS_NAMES),
    }
    return {"presence": presence, "classification": classification}


def write_predictions_csv(path: str | Path, paths: list[Path], true_classes: np.ndarray,
                          presence_probs: np.ndarray, class_probs: np.ndarray) -> None:
    """One row per image: what it is, what the model said, and every probability.

    This is the list to read when a metric drops: which scans were missed and how
    confidently.
    """
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true_type", "predicted_type", "correct", "predicted_presence"]
                        + [f"p_{name}" for name in CLASS_NAMES] + [f"p_{PRESENCE_LABELS[1]}"])
        for image, truth, presence, classes in zip(paths, true_classes, presence_probs, class_probs):
            predicted = int(np.argmax(classes))
            writer.writerow([str(image), CLASS_NAMES[truth], CLASS_NAMES[predicted], int(predicted == truth),
                             PRESENCE_LABELS[int(np.argmax(presence))]]
                            + [f"{v:.4f}" for v in classes] + [f"{presence[1]:.4f}"])


def evaluate_paths(paths: list[Path], true_classes: np.ndarray, *, model_dir=None, batch_size: int = 32,
                   progress: bool = True, predictions_csv: str | Path | None = None) -> dict:
    """Run the shipped predictor over ``paths`` and return the evaluation report.

    Unreadable files are listed under ``"unreadable"`` and left out of the metrics.
    ``predictions_csv``, when given, receives every image's prediction
    (:func:`write_predictions_csv`).
    """
    from tqdm import tqdm

    from mlcore.inference import get_predictor

    predictor = get_predictor(model_dir)
    presence_all, class_all, kept, unreadable = [], [], [], []
    started = time.perf_counter()
    for start in tqdm(range(0, len(paths), batch_size), desc="evaluating", unit="batch", disable=not progress):
        arrays, rows = [], []
        for offset, path in enumerate(paths[start : start + batch_size]):
            try:
                arrays.append(prepare_image(path, predictor.image_size))
                rows.append(start + offset)
            except UnreadableImageError as exc:
                unreadable.append({"path": str(path), "error": str(exc)})
        if arrays:
            presence, classification = predictor.predict_arrays(np.stack(arrays))
            presence_all.append(presence)
            class_all.append(classification)
            kept.extend(rows)
    elapsed = time.perf_counter() - started
    presence_probs = np.concatenate(presence_all) if presence_all else np.zeros((0, len(PRESENCE_LABELS)))
    class_probs = np.concatenate(class_all) if class_all else np.zeros((0, len(CLASS_NAMES)))
    kept_classes = np.asarray(true_classes)[kept]
    if predictions_csv:
        write_predictions_csv(predictions_csv, [paths[i] for i in kept], kept_classes, presence_probs, class_probs)
    model = {"name": predictor.info.name, "version": predictor.info.version, "sha256": predictor.info.sha256}
    report = {
        "n": len(kept),
        "models": {
            "presence": model | {"name": f"{predictor.info.name}/presence"},
            "classifier": model | {"name": f"{predictor.info.name}/classifier"},
        },
        **compute_metrics(kept_classes, presence_probs, class_probs),
        "seconds_per_image": elapsed / max(1, len(kept)),
        "unreadable": unreadable,
    }
    return report


def render_table(report: dict) -> str:
    """A readable summary of a report for the terminal."""
    presence, classification = report["presence"], report["classification"]
    lines = [
        f"images evaluated: {report['n']}   unreadable: {len(report.get('unreadable', []))}   "
        f"seconds/image: {report['seconds_per_image']:.3f}",
        "",
        f"{'stage':<26}{'accuracy':>9}{'precision':>11}{'recall':>9}{'f1':>8}",
        f"{'1 presence (tumor=+)':<26}{presence['accuracy']:>9.4f}{presence['precision']:>11.4f}"
        f"{presence['recall']:>9.4f}{presence['f1']:>8.4f}",
        f"{'2 type (macro)':<26}{classification['accuracy']:>9.4f}{classification['precision_macro']:>11.4f}"
        f"{classification['recall_macro']:>9.4f}{classification['f1_macro']:>8.4f}",
        "",
        f"{'class':<14}{'precision':>10}{'recall':>9}{'f1':>8}{'support':>9}",
    ]
    for name, row in classification["per_class"].items():
        lines.append(f"{name:<14}{row['precision']:>10.4f}{row['recall']:>9.4f}{row['f1']:>8.4f}{row['support']:>9}")
    lines += ["", "type confusion (rows true, columns predicted): " + " ".join(classification["labels"])]
    lines += [f"  {name:<12}" + " ".join(f"{v:>6}" for v in row)
              for name, row in zip(classification["labels"], classification["confusion_matrix"])]
    lines += ["presence confusion (rows true normal/tumor): "
              + "  ".join(str(row) for row in presence["confusion_matrix"])]
    return "\n".join(lines)
