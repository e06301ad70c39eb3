"""Class-per-folder datasets and a leak-free train/validation split.

The public brain-MRI sets contain the same slice saved several times and adjacent
slices that look nearly the same. A random split would put such twins on both sides
and flatter the validation score, so images are first grouped by perceptual hash and
whole groups are assigned to one side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlcore.constants import CLASS_ALIASES, CLASS_NAMES, IMAGE_EXTENSIONS
from mlcore.preprocessing import UnreadableImageError, decode_image

# 256-bit pHash (hash_size=16). Measured on the shared 5,708-image set: at <= 40
# differing bits, near-twins merge into groups of at most 22 images and only 22 of
# 16 million image pairs straddle two classes; at 48+ unrelated slices start to
# chain into groups of hundreds. See the model card for the counts of a run.
DEFAULT_HASH_SIZE = 16
DEFAULT_MAX_HASH_DISTANCE = 40


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str  # one of CLASS_NAMES

    @property
    def label_index(self) -> int:
        return CLASS_NAMES.index(self.label)


@dataclass
class Dataset:
    root: Path
    images: list[LabelledImage]
    skipped_folders: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([image.label_index for image in self.images])

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for i in self.images if i.label == name) for name in CLASS_NAMES}


def discover(root: str | Path) -> Dataset:
    """List the images under ``root``, one sub-folder per class (aliases accepted).

    Folders whose name is not a known class are reported in ``skipped_folders``;
    files are sorted so every run sees the same order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    images: list[LabelledImage] = []
    skipped: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = CLASS_ALIASES.get(folder.name.lower())
        if label is None:
            skipped.append(folder.name)
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(LabelledImage(path=path, label=label))
    return Dataset(root=root, images=images, skipped_folders=skipped)


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 over every (label, relative path, file content hash) in order.

    Two folders with the same fingerprint hold exactly the same labelled bytes.
    """
    digest = hashlib.sha256()
    for image in dataset.images:
        rel = image.path.relative_to(dataset.root).as_posix()
        digest.update(f"{image.label}\0{rel}\0{file_sha256(image.path)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def perceptual_hashes(paths: list[Path], hash_size: int = DEFAULT_HASH_SIZE) -> np.ndarray:
    """Boolean (n, hash_size**2) matrix of pHash bits; unreadable files get all-False rows."""
    import imagehash

    bits = np.zeros((len(paths), hash_size * hash_size), dtype=bool)
    for row, path in enumerate(paths):
        try:
            image = decode_image(path).convert("L")
        except UnreadableImageError:
            continue
        bits[row] = imagehash.phash(image, hash_size=hash_size).hash.flatten()
    return bits


def hamming_distances(bits: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances of boolean hash rows, as int32 (n, n)."""
    as_float = bits.astype(np.float32)
    return (as_float @ (1.0 - as_float).T + (1.0 - as_float) @ as_float.T).astype(np.int32)


def group_near_duplicates(bits: np.ndarray, max_distance: int = DEFAULT_MAX_HASH_DISTANCE) -> np.ndarray:
    """Group ids such that any two images within ``max_distance`` bits share a group.

    Grouping is transitive (connected components), so a chain of near-twins stays
    together even when its ends differ by more than ``max_distance``.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    if len(bits) == 0:
        return np.zeros(0, dtype=np.int64)
    _, groups = connected_components(csr_matrix(hamming_distances(bits) <= max_distance), directed=False)
    return groups


@dataclass
class Split:
    train_indices: np.ndarray
    validation_indices: np.ndarray
    groups: np.ndarray
    seed: int
    validation_fraction: float
    max_hash_distance: int

    def summary(self) -> dict:
        sizes = np.bincount(self.groups) if len(self.groups) else np.zeros(0, dtype=int)
        return {
            "method": "StratifiedGroupKFold over pHash near-duplicate groups",
            "hash": f"phash {DEFAULT_HASH_SIZE}x{DEFAULT_HASH_SIZE}",
            "max_hash_distance": self.max_hash_distance,
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "n_images": int(len(self.groups)),
            "n_groups": int(len(sizes)),
            "merged_groups": int((sizes > 1).sum()),
            "images_in_merged_groups": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes.max()) if len(sizes) else 0,
            "n_train": int(len(self.train_indices)),
            "n_validation": int(len(self.validation_indices)),
        }


def split_train_validation(
    dataset: Dataset,
    *,
    seed: int = 42,
    validation_fraction: float = 1 / 6,
    max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE,
    bits: np.ndarray | None = None,
) -> Split:
    """Deterministic, class-stratified split that never separates a near-duplicate group."""
    from sklearn.model_selection import StratifiedGroupKFold

    if bits is None:
        bits = perceptual_hashes([image.path for image in dataset.images])
    groups = group_near_duplicates(bits, max_hash_distance)
    n_splits = max(2, round(1 / validation_fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, validation = next(splitter.split(np.zeros(len(groups)), dataset.labels, groups))
    return Split(
        train_indices=np.sort(train),
        validation_indices=np.sort(validation),
        groups=groups,
        seed=seed,
        validation_fraction=validation_fraction,
        max_hash_distance=max_hash_distance,
    )
