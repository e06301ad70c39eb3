"""The same image must reach the network identically in training, evaluation and serving."""
import io

import numpy as np
import pytest
from PIL import Image

from mlcore import training
from mlcore.evaluation import evaluate_paths
from mlcore.preprocessing import UnreadableImageError, prepare_image, to_grayscale_square
from tests.mlcore_tests.conftest import synthetic_slice


class RecordingNetwork:
    """Stands in for a Keras model and records what it was fed."""

    def __init__(self):
        self.seen = []

    def predict(self, batch, verbose=0):  # Keras Model.predict signature used by training
        self.seen.append(np.array(batch))
        return np.zeros((len(batch), 2, 2, 1), dtype=np.float32)

    def predict_on_batch(self, batch):  # Keras Model.predict_on_batch used by inference
        self.seen.append(np.array(batch))
        n = len(batch)
        return {"presence": np.tile([0.9, 0.1], (n, 1)), "classification": np.tile([0.1, 0.1, 0.7, 0.1], (n, 1))}


def test_grayscale_and_rgb_versions_of_a_scan_give_identical_input():
    gray = synthetic_slice(1)
    assert np.array_equal(prepare_image(gray), prepare_image(gray.convert("RGB")))


def test_scaling_is_xceptions_minus_one_to_one():
    array = prepare_image(Image.new("L", (224, 224), 255))
    assert array.shape == (224, 224, 3) and array.dtype == np.float32
    assert np.allclose(array, 1.0)
    assert np.allclose(prepare_image(Image.new("L", (224, 224), 0)), -1.0)


def test_non_square_scans_are_padded_not_stretched():
    wide = Image.new("L", (200, 100), 255)
    square = np.asarray(to_grayscale_square(wide, 100))
    assert square[0, 50] == 0 and square[99, 50] == 0  # black bands above and below
    assert square[50, 50] == 255


def test_16_bit_images_are_windowed_to_full_range():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 10)
    array = prepare_image(Image.fromarray(ramp), size=64)
    assert array.min() == pytest.approx(-1.0) and array.max() == pytest.approx(1.0, abs=0.01)


def test_corrupt_bytes_are_refused_with_a_clear_reason():
    png = io.BytesIO()
    synthetic_slice(2).save(png, format="PNG")
    with pytest.raises(UnreadableImageError, match="not a readable image"):
        prepare_image(png.getvalue()[:200])
    with pytest.raises(UnreadableImageError):
        prepare_image(b"%PDF-1.4 not an image")


def test_training_evaluation_and_serving_feed_the_network_the_same_array(tmp_path, monkeypatch):
    path = tmp_path / "scan.png"
    synthetic_slice(3, size=150, mode="RGB").save(path)
    expected = prepare_image(path, 71)

    # Training: the activation cache is built from prepare_image output (and its mirror).
    recorder = RecordingNetwork()
    recorder.output = type("T", (), {"shape": (None, 2, 2, 1)})()
    for view in ("original", "mirror", "augmented-0"):
        training.cache_view(recorder, [path], tmp_path / f"{view}.npy", view=view, image_size=71)
    assert np.array_equal(recorder.seen[0][0], expected)
    assert np.array_equal(recorder.seen[1][0], expected[:, ::-1, :])
    # Augmented views keep the same scaling and geometry, only the content moves.
    augmented = recorder.seen[2][0]
    assert augmented.shape == expected.shape and augmented.min() >= -1 and augmented.max() <= 1
    assert not np.array_equal(augmented, expected)

    # Serving and evaluation: the Predictor's network receives the same array.
    from mlcore import inference

    predictor = inference.Predictor.__new__(inference.Predictor)
    predictor.network, predictor.image_size, predictor.mirror = RecordingNetwork(), 71, True
    predictor.info = inference.ModelInfo("test", "0", "0" * 64)
    predictor._lock = __import__("threading").Lock()
    predictor.predict([path])
    assert np.array_equal(predictor.network.seen[-1][0], expected)
    assert np.array_equal(predictor.network.seen[-1][1], expected[:, ::-1, :])

    monkeypatch.setattr(inference, "get_predictor", lambda model_dir=None: predictor)
    evaluate_paths([path], np.array([2]), progress=False)
    assert np.array_equal(predictor.network.seen[-1][0], expected)


def test_augmentation_is_reproducible_from_its_seed():
    from mlcore.augmentation import augment_slice

    gray = to_grayscale_square(synthetic_slice(5), 96)
    first = np.asarray(augment_slice(gray, np.random.default_rng(11)))
    again = np.asarray(augment_slice(gray, np.random.default_rng(11)))
    other = np.asarray(augment_slice(gray, np.random.default_rng(12)))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
