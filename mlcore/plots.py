"""PNG plots for the model card (matplotlib, headless)."""
from __future__ import annotations

import csv
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrices(report: dict, path: str | Path) -> None:
    """Both stages' confusion matrices side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for axis, key, title in ((axes[0], "presence", "Stage 1: presence"), (axes[1], "classification", "Stage 2: type")):
        matrix, labels = report[key]["confusion_matrix"], report[key]["labels"]
        axis.imshow(matrix, cmap="Blues")
        axis.set_xticks(range(len(labels)), labels, rotation=30)
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{title} (accuracy {report[key]['accuracy']:.4f})")
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                axis.text(j, i, str(value), ha="center", va="center",
                          color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history_csv: str | Path, path: str | Path) -> None:
    """Loss and accuracy per epoch for both heads, training vs validation."""
    plt = _pyplot()
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = list(range(1, len(rows) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for head in ("presence", "classification"):
        for prefix, style in (("", "-"), ("val_", "--")):
            loss_key, acc_key = f"{prefix}{head}_loss", f"{prefix}{head}_accuracy"
            if loss_key in rows[0]:
                axes[0].plot(epochs, [float(r[loss_key]) for r in rows], style, label=f"{prefix or 'train_'}{head}")
            if acc_key in rows[0]:
                axes[1].plot(epochs, [float(r[acc_key]) for r in rows], style, label=f"{prefix or 'train_'}{head}")
    axes[0].set_title("loss")
    axes[1].set_title("accuracy")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
