"""Fine-tune the two-headed Xception on a class-per-folder dataset.

Recipe, chosen to fit a 2-core CPU (full fine-tuning costs ~19 min an epoch there):

1. Split images into train/validation by near-duplicate group (mlcore.dataset).
2. Run the frozen early part of the network (blocks 1..cut_block) once over every
   image, its horizontal mirror and ``augment_views`` randomly augmented copies
   (mlcore.augmentation: rotation, zoom, shift, mirror, gamma), and cache those
   activations (float16, on disk). The early blocks keep their ImageNet weights, so
   caching them loses nothing; each training step picks one cached view per image.
3. Train the later blocks and both heads on the cached activations, with random
   one-cell shifts of the activation map (~16 px of the input) as augmentation,
   label smoothing and a warm-up + cosine learning-rate schedule. BatchNorm layers stay
   in inference mode, as Keras recommends for fine-tuning.
4. Copy the result into a float32 network, store it as float16, and evaluate the
   stored file end-to-end (decode -> preprocess -> predict) on the validation images.

``BackupAndRestore`` saves weights and optimizer state after every epoch, so an
interrupted run continues where it stopped when started again with ``--resume``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlcore import dataset as data
from mlcore.constants import ARCHITECTURE, CLASS_NAMES, IMAGE_SIZE, NORMAL_CLASS, PRESENCE_LABELS
from mlcore.network import (
    CLASSIFICATION_OUTPUT,
    PRESENCE_OUTPUT,
    _keras,
    build_ensemble,
    build_network,
    copy_weights,
    save_weights,
    sha256_of,
    split_network,
)
from mlcore.augmentation import augment_slice
from mlcore.preprocessing import decode_image, prepare_image, scale_for_xception, to_grayscale_square

MODEL_NAME = "neuroscan-xception"
WEIGHTS_FILENAME = "neuroscan-xception.weights.npz"
CARD_FILENAME = "model_card.json"
VALIDATION_LIST_FILENAME = "validation_split.txt"
RUN_RECORD = "run.json"


@dataclass
class TrainConfig:
    data_dir: str
    output_dir: str
    work_dir: str
    weights: str = "imagenet"
    image_size: int = IMAGE_SIZE
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 2e-4
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    dropout: float = 0.3
    cut_block: int = 8
    augment_views: int = 2
    seed: int = 42
    validation_fraction: float = 1 / 6
    max_hash_distance: int = data.DEFAULT_MAX_HASH_DISTANCE
    precision: str = "mixed_bfloat16"
    limit_per_class: int = 0
    max_steps_per_epoch: int = 0
    version: str = "1.0.0"
    resume: bool = False
    ensemble_with: tuple[str, ...] = ()


def code_version() -> str:
    """git commit of the code that trained the model (with '-dirty' for local changes)."""
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "mlcore"], cwd=root, capture_output=True, text=True)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _limit(dataset: data.Dataset, per_class: int) -> data.Dataset:
    if per_class <= 0:
        return dataset
    kept, seen = [], {name: 0 for name in CLASS_NAMES}
    for image in dataset.images:
        if seen[image.label] < per_class:
            kept.append(image)
            seen[image.label] += 1
    return data.Dataset(root=dataset.root, images=kept, skipped_folders=dataset.skipped_folders)


VIEWS_BASE = ("original", "mirror")


def _view_input(path: Path, view: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """The model input for one cached view of an image, built with the shared preprocessing."""
    if view == "original":
        return prepare_image(path, image_size)
    if view == "mirror":
        return prepare_image(path, image_size)[:, ::-1, :]
    gray = to_grayscale_square(decode_image(path), image_size)
    return scale_for_xception(np.asarray(augment_slice(gray, rng)))


def cache_view(front, paths: list[Path], cache_file: Path, *, view: str, image_size: int, seed: int = 0,
               batch_size: int = 32) -> np.ndarray:
    """Front-network outputs of one view of every image: shape (n, h, w, c), float16.

    ``view`` is "original", "mirror" or "augmented-K" (a random augmentation seeded by
    ``seed`` and K, so a rerun caches the same pixels). Written to a .npy memmap batch
    by batch with a progress bar and marked complete only at the end, so an
    interrupted run recomputes just the unfinished view.
    """
    from tqdm import tqdm

    done_marker = cache_file.with_suffix(".complete")
    if cache_file.exists() and done_marker.exists():
        return np.load(cache_file, mmap_mode="r")
    rng = np.random.default_rng([seed, int(view.rsplit("-", 1)[1])] if view not in VIEWS_BASE else seed)
    shape = (len(paths),) + tuple(int(d) for d in front.output.shape[1:])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.float16, shape=shape)
    for start in tqdm(range(0, len(paths), batch_size), desc=f"caching {cache_file.stem}", unit="batch"):
        batch = np.stack([_view_input(p, view, image_size, rng) for p in paths[start : start + batch_size]])
        out[start : start + len(batch)] = front.predict(batch, verbose=0).astype(np.float16)
    out.flush()
    del out
    done_marker.touch()
    return np.load(cache_file, mmap_mode="r")


def _targets(labels: np.ndarray) -> dict[str, np.ndarray]:
    normal = CLASS_NAMES.index(NORMAL_CLASS)
    return {
        PRESENCE_OUTPUT: np.eye(len(PRESENCE_LABELS), dtype=np.float32)[(labels != normal).astype(int)],
        CLASSIFICATION_OUTPUT: np.eye(len(CLASS_NAMES), dtype=np.float32)[labels],
    }


def _training_batches(views: list[np.ndarray], labels: np.ndarray, *, batch_size: int, seed: int):
    """Endless generator of batches: a random cached view per image, random one-cell shift."""
    rng = np.random.default_rng(seed)
    targets = _targets(labels)
    n = views[0].shape[0]
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            index = np.sort(order[start : start + batch_size])
            chosen = rng.integers(0, len(views), len(index))
            batch = np.stack([views[v][i] for v, i in zip(chosen, index)]).astype(np.float32)
            padded = np.pad(batch, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            shifts = rng.integers(0, 3, (len(index), 2))
            height, width = batch.shape[1:3]
            for row, (dy, dx) in enumerate(shifts):
                batch[row] = padded[row, dy : dy + height, dx : dx + width]
            yield batch, {key: value[index] for key, value in targets.items()}


def _cache_key(config: TrainConfig, fingerprint: str, split: data.Split, weights_id: str) -> str:
    digest = hashlib.sha256(
        json.dumps(
            [fingerprint, split.train_indices.tolist(), split.validation_indices.tolist(), config.cut_block,
             config.image_size, weights_id, config.limit_per_class]
        ).encode()
    )
    return digest.hexdigest()[:16]


def train(config: TrainConfig) -> dict:
    """Run the whole recipe and write weights, model card and plots to ``config.output_dir``."""
    keras = _keras()
    keras.utils.set_random_seed(config.seed)
    output_dir, work_dir = Path(config.output_dir), Path(config.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    dataset = _limit(data.discover(config.data_dir), config.limit_per_class)
    if not dataset.images:
        raise SystemExit(f"no labelled images under {config.data_dir}")
    fingerprint = data.fingerprint(dataset)
    split = data.split_train_validation(
        dataset, seed=config.seed, validation_fraction=config.validation_fraction,
        max_hash_distance=config.max_hash_distance,
    )
    summary = split.summary()
    print(f"data: {len(dataset.images)} images {dataset.counts()} fingerprint {fingerprint[:12]}")
    print(f"split: {summary['n_train']} train / {summary['n_validation']} validation; "
          f"{summary['merged_groups']} near-duplicate groups merged "
          f"({summary['images_in_merged_groups']} images, largest {summary['largest_group']})")
    labels = dataset.labels
    paths = [image.path for image in dataset.images]
    train_idx, val_idx = split.train_indices, split.validation_indices

    weights_id = "imagenet" if config.weights == "imagenet" else (
        "none" if config.weights in ("", "none") else sha256_of(config.weights))
    cache_dir = work_dir / f"cache-{_cache_key(config, fingerprint, split, weights_id)}"
    run_record = {
        "data_fingerprint": fingerprint,
        "split_sha256": hashlib.sha256(json.dumps(split.validation_indices.tolist()).encode()).hexdigest(),
        "hyperparameters": {k: v for k, v in asdict(config).items()
                            if k not in ("data_dir", "output_dir", "work_dir", "resume", "ensemble_with")},
    }
    (work_dir / RUN_RECORD).write_text(json.dumps(run_record, indent=2) + "\n")

    # Phase 1: float32 front, cached once.
    keras.mixed_precision.set_global_policy("float32")
    network32 = build_network(weights=config.weights, image_size=config.image_size, dropout=config.dropout)
    front32, _ = split_network(network32, config.cut_block)
    view_names = list(VIEWS_BASE) + [f"augmented-{k}" for k in range(config.augment_views)]
    train_views = [
        cache_view(front32, [paths[i] for i in train_idx], cache_dir / f"train-{view}.npy", view=view,
                   image_size=config.image_size, seed=config.seed)
        for view in view_names
    ]
    val_original = cache_view(front32, [paths[i] for i in val_idx], cache_dir / "validation-original.npy",
                              view="original", image_size=config.image_size)

    # Phase 2: train the tail (mixed precision where the CPU has bf16 units).
    keras.mixed_precision.set_global_policy(config.precision)
    network = build_network(weights=config.weights, image_size=config.image_size, dropout=config.dropout)
    _, tail = split_network(network, config.cut_block)
    for layer in tail.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    steps = max(1, len(train_idx) // config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    total_steps = steps * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total_steps - total_steps // 10),
        warmup_target=config.learning_rate, warmup_steps=total_steps // 10, alpha=0.01,
    )
    tail.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay),
        loss={
            PRESENCE_OUTPUT: keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            CLASSIFICATION_OUTPUT: keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        },
        metrics={PRESENCE_OUTPUT: ["accuracy"], CLASSIFICATION_OUTPUT: ["accuracy"]},
    )
    backup_dir = work_dir / "backup"
    history_csv = work_dir / "history.csv"
    final_marker = work_dir / "training.complete"
    if not config.resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
        history_csv.unlink(missing_ok=True)
        final_marker.unlink(missing_ok=True)
    trained_weights = work_dir / "trained.weights.h5"
    if final_marker.exists() and trained_weights.exists():
        print("training already complete; re-running only the evaluation and model card")
        network.load_weights(trained_weights)
    else:
        val_x = np.asarray(val_original, dtype=np.float32)
        val_y = _targets(labels[val_idx])
        tail.fit(
            _training_batches(train_views, labels[train_idx], batch_size=min(config.batch_size, len(train_idx)),
                              seed=config.seed),
            steps_per_epoch=steps,
            epochs=config.epochs,
            validation_data=(val_x, val_y),
            validation_batch_size=64,
            callbacks=[
                keras.callbacks.BackupAndRestore(str(backup_dir)),
                keras.callbacks.CSVLogger(str(history_csv), append=True),
                keras.callbacks.ModelCheckpoint(str(work_dir / "epoch-{epoch:02d}.weights.h5"), save_weights_only=True),
            ],
            verbose=1,
        )
        network.save_weights(trained_weights)
        final_marker.touch()
    training_seconds = time.time() - started

    # Phase 3: float32 network (or ensemble with earlier runs on the same split), stored as float16.
    keras.mixed_precision.set_global_policy("float32")
    members, member_runs = [network], [run_record]
    for other in config.ensemble_with:
        other_record = json.loads((Path(other) / RUN_RECORD).read_text())
        if other_record["split_sha256"] != run_record["split_sha256"]:
            raise SystemExit(f"{other} was trained on another split; an ensemble must share the validation images")
        member = build_network(weights=None, image_size=config.image_size, dropout=config.dropout)
        member.load_weights(Path(other) / "trained.weights.h5")
        members.append(member)
        member_runs.append(other_record)
    final = build_ensemble(len(members), image_size=config.image_size)
    copy_weights(final, members)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights_path = output_dir / WEIGHTS_FILENAME
    weights_sha = save_weights(final, weights_path)
    (output_dir / VALIDATION_LIST_FILENAME).write_text(
        "".join(f"{dataset.images[i].path.relative_to(dataset.root).as_posix()}\n" for i in val_idx)
    )

    card = {
        "name": MODEL_NAME,
        "version": config.version,
        "architecture": ARCHITECTURE,
        "description": "Xception (ImageNet init) with two heads: stage 1 presence, stage 2 tumor type.",
        "weights_file": WEIGHTS_FILENAME,
        "weights_sha256": weights_sha,
        "weights_dtype": "float16",
        "image_size": config.image_size,
        "class_names": list(CLASS_NAMES),
        "presence_labels": list(PRESENCE_LABELS),
        "test_time_augmentation": "hflip",
        "ensemble_members": len(members),
        "members": [record["hyperparameters"] for record in member_runs],
        "preprocessing": "mlcore.preprocessing.prepare_image: grayscale, centred black pad to square, "
                         "bilinear resize, x/127.5-1, gray->3 channels",
        "data": {"dir": str(config.data_dir), "fingerprint_sha256": fingerprint, "counts": dataset.counts(),
                 "skipped_folders": dataset.skipped_folders},
        "split": summary | {"validation_list": VALIDATION_LIST_FILENAME},
        "hyperparameters": run_record["hyperparameters"],
        "code_version": code_version(),
        "training_seconds": round(training_seconds, 1),
    }
    (output_dir / CARD_FILENAME).write_text(json.dumps(card, indent=2) + "\n")

    # Phase 4: honest numbers from the stored file, through the serving code path.
    from mlcore.evaluation import evaluate_paths, render_table
    from mlcore.plots import plot_confusion_matrices, plot_training_curves

    report = evaluate_paths([paths[i] for i in val_idx], labels[val_idx], model_dir=output_dir)
    print(render_table(report))
    card["validation_metrics"] = report
    plot_confusion_matrices(report, output_dir / "confusion_matrices.png")
    if history_csv.exists():
        plot_training_curves(history_csv, output_dir / "training_curves.png")
        card["training_history"] = history_csv.read_text().splitlines()
    card["plots"] = ["confusion_matrices.png", "training_curves.png"]
    (output_dir / CARD_FILENAME).write_text(json.dumps(card, indent=2) + "\n")
    return card
