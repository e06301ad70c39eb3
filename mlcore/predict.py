"""``python -m mlcore.predict IMAGE...`` — presence and tumor type for each image."""
from __future__ import annotations

import argparse
import json
import sys

from mlcore.inference import get_predictor
from mlcore.preprocessing import UnreadableImageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcore.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args(argv)

    predictor = get_predictor(args.model_dir)
    rows, failed = [], 0
    for path in args.images:
        try:
            result = predictor.predict([path])[0]
        except (UnreadableImageError, OSError) as exc:
            failed += 1
            rows.append({"image": path, "error": str(exc)})
            continue
        rows.append({
            "image": path,
            "presence": {"label": result.presence.label, "probabilities": result.presence.probabilities},
            "type": {"label": result.classification.label, "probabilities": result.classification.probabilities},
            "seconds": round(result.seconds, 4),
        })
    if args.json:
        info = predictor.info
        print(json.dumps({"model": {"name": info.name, "version": info.version, "sha256": info.sha256},
                          "predictions": rows}, indent=2))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['image']}: ERROR {row['error']}")
                continue
            probs = "  ".join(f"{k} {v:.3f}" for k, v in row["type"]["probabilities"].items())
            print(f"{row['image']}: {row['presence']['label'].upper()} "
                  f"(p_tumor {row['presence']['probabilities']['tumor']:.3f}); type {row['type']['label']} [{probs}]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
