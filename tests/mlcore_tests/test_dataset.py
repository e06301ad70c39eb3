"""Loading class folders and splitting them without leaking near-duplicates."""
import numpy as np
from PIL import Image, ImageFilter

from mlcore import dataset as data
from tests.mlcore_tests.conftest import synthetic_slice


def test_it_accepts_the_usual_names_for_the_normal_class(make_dataset):
    for folder in ("notumor", "no_tumor", "normal"):
        root = make_dataset(per_class=1, folders=("glioma", folder))
        (root / "README").mkdir(exist_ok=True)
        found = data.discover(root)
        assert found.counts()["normal"] == 1
        assert found.skipped_folders == ["README"]
        for child in root.iterdir():
            for f in child.iterdir():
                f.unlink()
            child.rmdir()


def test_near_duplicates_never_straddle_the_split(tmp_path):
    root = tmp_path / "data"
    for c, folder in enumerate(("glioma", "meningioma", "notumor", "pituitary")):
        (root / folder).mkdir(parents=True)
        for i in range(8):
            original = synthetic_slice(100 * c + i, size=128)
            original.save(root / folder / f"{i}.png")
            # The same slice re-saved as JPEG and a slightly blurred twin: both must follow it.
            original.save(root / folder / f"{i}_resaved.jpg", quality=80)
            original.filter(ImageFilter.GaussianBlur(1)).save(root / folder / f"{i}_blur.png")
    dataset = data.discover(root)
    split = data.split_train_validation(dataset, seed=7, validation_fraction=0.25)

    train_groups = set(split.groups[split.train_indices])
    validation_groups = set(split.groups[split.validation_indices])
    assert not train_groups & validation_groups
    # Every original is grouped with its two twins, and the summary says so.
    names = [image.path.name.split("_")[0].split(".")[0] + image.path.parent.name for image in dataset.images]
    for name in set(names):
        assert len({split.groups[i] for i, n in enumerate(names) if n == name}) == 1
    assert split.summary()["merged_groups"] >= 32
    assert split.summary()["n_validation"] > 0 and split.summary()["n_train"] > 0


def test_the_split_is_deterministic(make_dataset):
    dataset = data.discover(make_dataset(per_class=6))
    first = data.split_train_validation(dataset, seed=3, validation_fraction=1 / 3)
    second = data.split_train_validation(dataset, seed=3, validation_fraction=1 / 3)
    assert np.array_equal(first.validation_indices, second.validation_indices)


def test_validation_of_the_real_dataset_has_no_twin_in_training(shared_data):
    dataset = data.discover(shared_data)
    bits = data.perceptual_hashes([image.path for image in dataset.images])
    split = data.split_train_validation(dataset, bits=bits)
    distances = data.hamming_distances(bits)
    closest = distances[np.ix_(split.validation_indices, split.train_indices)].min()
    assert closest > data.DEFAULT_MAX_HASH_DISTANCE
    summary = split.summary()
    assert summary["merged_groups"] > 0
    # Every class is represented on both sides.
    assert len(set(dataset.labels[split.validation_indices])) == 4


def test_fingerprint_changes_when_one_byte_of_one_image_changes(make_dataset):
    root = make_dataset(per_class=2)
    before = data.fingerprint(data.discover(root))
    target = next((root / "glioma").iterdir())
    Image.open(target).point(lambda v: min(255, v + 1)).save(target)
    assert data.fingerprint(data.discover(root)) != before
