"""Inference speed of the shipped model on real scans: load time and per-image latency.

    python bench/inference_latency.py [DATA_DIR] [--images 64] [--repeats 5]

Prints medians over repeats (these machines are noisy) for single-image calls and
for batches of 16, the batch speed-up ratio, and the process's peak memory.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlcore import dataset as data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/brain-mri/train"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args()

    paths = [image.path for image in data.discover(args.data_dir).images][:: 37][: args.images]
    started = time.perf_counter()
    from mlcore.inference import Predictor

    predictor = Predictor(args.model_dir)
    load_seconds = time.perf_counter() - started
    predictor.predict(paths[:2])  # warm-up: graph tracing and allocator

    single, batched = [], []
    for _ in range(args.repeats):
        began = time.perf_counter()
        for path in paths:
            predictor.predict([path])
        single.append((time.perf_counter() - began) / len(paths))
        began = time.perf_counter()
        predictor.predict(paths, batch_size=16)
        batched.append((time.perf_counter() - began) / len(paths))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model {predictor.info.name} {predictor.info.version} (sha256 {predictor.info.sha256[:12]}), "
          f"test-time mirroring: {predictor.mirror}")
    print(f"images: {len(paths)}  repeats: {args.repeats}")
    print(f"model load:                 {load_seconds:.2f} s")
    print(f"one image per call, median: {statistics.median(single) * 1000:.1f} ms/image "
          f"(min {min(single) * 1000:.1f}, max {max(single) * 1000:.1f})")
    print(f"batches of 16, median:      {statistics.median(batched) * 1000:.1f} ms/image "
          f"(min {min(batched) * 1000:.1f}, max {max(batched) * 1000:.1f})")
    print(f"batching speed-up (median ratio): {statistics.median(single) / statistics.median(batched):.2f}x")
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
