"""``python -m mlcore.train DATA_DIR`` — train both stages and write the model card.

Example (offline, with the local copy of Keras' ImageNet weights)::

    python -m mlcore.train ../shared/data/brain-mri/train \\
        --weights ../shared/pretrained/xception_imagenet_notop.weights.h5
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mlcore.constants import IMAGE_SIZE
from mlcore.training import TrainConfig, train

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "artifacts"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcore.train", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="folder with one sub-folder per class")
    parser.add_argument("--architecture", default="xception", choices=["xception"])
    parser.add_argument("--weights", default="imagenet", help="'imagenet' (default), 'none' or a path to "
                        "Keras' no-top Xception weights file")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="where weights and model card go")
    parser.add_argument("--work-dir", default="train-runs/current", help="activation cache and checkpoints")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--cut-block", type=int, default=8,
                        help="blocks after this one are fine-tuned (2..12); earlier ones are cached")
    parser.add_argument("--augment-views", type=int, default=2,
                        help="randomly augmented copies of each training image to cache (besides the mirror)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-fraction", type=float, default=1 / 6)
    parser.add_argument("--precision", default="mixed_bfloat16", choices=["mixed_bfloat16", "float32"])
    parser.add_argument("--limit-per-class", type=int, default=0, help="use only N images per class (smoke tests)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=0)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--ensemble-with", action="append", default=[], metavar="WORK_DIR",
                        help="also ship the model trained in this earlier --work-dir (same split), averaged")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --work-dir")
    args = parser.parse_args(argv)
    train(TrainConfig(
        data_dir=args.data_dir, output_dir=args.output, work_dir=args.work_dir, weights=args.weights,
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, cut_block=args.cut_block, augment_views=args.augment_views, seed=args.seed,
        validation_fraction=args.validation_fraction, precision=args.precision,
        limit_per_class=args.limit_per_class, max_steps_per_epoch=args.max_steps_per_epoch,
        version=args.version, resume=args.resume, ensemble_with=tuple(args.ensemble_with),
    ))


if __name__ == "__main__":
    main()
