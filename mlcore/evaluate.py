"""``python -m mlcore.evaluate DATA_DIR --json OUT.json`` — score the shipped models.

DATA_DIR holds one sub-folder per class (``notumor``/``no_tumor``/``normal`` are the
same class). ``--split validation`` keeps only the images the model card lists as
held out, so the training folder can be re-scored honestly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mlcore import dataset as data
from mlcore.evaluation import evaluate_paths, render_table
from mlcore.inference import load_model_card


def select_validation(dataset: data.Dataset, model_dir: str | None) -> data.Dataset:
    """Only the images listed in the model card's validation split."""
    card = load_model_card(model_dir)
    listing = Path(model_dir or Path(__file__).resolve().parent / "artifacts") / card["split"]["validation_list"]
    wanted = set(listing.read_text().split())
    images = [i for i in dataset.images if i.path.relative_to(dataset.root).as_posix() in wanted]
    if len(images) != len(wanted):
        raise SystemExit(f"{len(wanted) - len(images)} validation images of the model card are not in {dataset.root}")
    return data.Dataset(root=dataset.root, images=images, skipped_folders=dataset.skipped_folders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcore.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--json", dest="json_path", help="write the report here")
    parser.add_argument("--model-dir", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--split", choices=["all", "validation"], default="all")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--predictions", metavar="OUT.csv", help="also write every image's prediction "
                        "and probabilities here (to see which scans are missed)")
    args = parser.parse_args(argv)

    dataset = data.discover(args.data_dir)
    if dataset.skipped_folders:
        print(f"ignored folders (not a known class): {', '.join(dataset.skipped_folders)}", file=sys.stderr)
    if args.split == "validation":
        dataset = select_validation(dataset, args.model_dir)
    else:
        card = load_model_card(args.model_dir)
        if card.get("data", {}).get("fingerprint_sha256") == data.fingerprint(dataset):
            print("note: this is the model's training folder; most images were trained on. "
                  "Use --split validation for held-out numbers.", file=sys.stderr)
    report = evaluate_paths([i.path for i in dataset.images], np.array([i.label_index for i in dataset.images]),
                            model_dir=args.model_dir, batch_size=args.batch_size,
                            predictions_csv=args.predictions)
    report["data_dir"] = str(args.data_dir)
    report["split"] = args.split
    print(render_table(report))
    for item in report["unreadable"]:
        print(f"unreadable: {item['path']}: {item['error']}", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
