"""A tiny real training run, and the guarantees around the weights it writes."""
import json
import socket

import numpy as np
import pytest

from mlcore import inference, train
from mlcore.inference import ModelIntegrityError, Predictor
from mlcore.network import sha256_of

pytestmark = pytest.mark.slow


TINY_ARGS = ["--weights", "none", "--image-size", "71", "--epochs", "1", "--max-steps-per-epoch", "1",
             "--batch-size", "4", "--validation-fraction", "0.34", "--precision", "float32", "--augment-views", "1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.mlcore_tests.conftest import synthetic_slice

    root = tmp_path_factory.mktemp("tiny") / "data"
    for c, folder in enumerate(("glioma", "meningioma", "no_tumor", "pituitary")):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            synthetic_slice(500 * c + i, 80).save(root / folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_data):
    """Train on 12 synthetic slices at 71x71 for one step; returns the model folder."""
    out = tiny_data.parent / "model"
    train.main([str(tiny_data), *TINY_ARGS, "--output", str(out), "--work-dir", str(tiny_data.parent / "work")])
    return out


def test_a_second_run_can_ship_as_an_ensemble_with_the_first(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "ensemble"
    train.main([str(tiny_data), *TINY_ARGS, "--seed", "42", "--output", str(out), "--work-dir", str(tmp_path / "w2"),
                "--ensemble-with", str(tiny_data.parent / "work")])
    card = json.loads((out / "model_card.json").read_text())
    assert card["ensemble_members"] == 2 and len(card["members"]) == 2
    predictor = Predictor(out)
    single = Predictor(tiny_model)
    assert len(predictor.network.weights) == 2 * len(single.network.weights)


def test_a_tiny_training_run_writes_weights_card_and_plots(tiny_model):
    card = json.loads((tiny_model / "model_card.json").read_text())
    for key in ("weights_sha256", "data", "split", "hyperparameters", "code_version", "validation_metrics"):
        assert key in card
    assert card["split"]["n_validation"] > 0
    assert card["validation_metrics"]["classification"]["labels"] == ["glioma", "meningioma", "normal", "pituitary"]
    for plot in card["plots"]:
        assert (tiny_model / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_trained_model_loads_and_predicts_probabilities(tiny_model, tmp_path):
    from tests.mlcore_tests.conftest import synthetic_slice

    path = tmp_path / "scan.png"
    synthetic_slice(9, 90).save(path)
    result = Predictor(tiny_model).predict([path])[0]
    assert sum(result.classification.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(result.presence.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert result.model.sha256 == json.loads((tiny_model / "model_card.json").read_text())["weights_sha256"]


def _copy(model_dir, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(model_dir, target)
    return target


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    model_dir = _copy(tiny_model, tmp_path)
    weights = model_dir / "neuroscan-xception.weights.npz"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        Predictor(model_dir)


def test_corrupt_weights_with_a_matching_card_are_refused(tiny_model, tmp_path):
    model_dir = _copy(tiny_model, tmp_path)
    weights = model_dir / "neuroscan-xception.weights.npz"
    weights.write_bytes(weights.read_bytes()[:1000])
    card = json.loads((model_dir / "model_card.json").read_text())
    card["weights_sha256"] = sha256_of(weights)
    (model_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="cannot load"):
        Predictor(model_dir)


def test_a_missing_model_card_is_a_clear_error(tmp_path):
    with pytest.raises(ModelIntegrityError, match="no model card"):
        Predictor(tmp_path)


def test_shipped_model_loads_offline_and_reads_real_scans(shared_data, monkeypatch):
    """The committed model must read held-out real scans right, without any network access.

    Twenty scans the model never trained on (the first five of each class in the model
    card's validation list). The model is ~99% accurate, not infallible, so one miss
    per stage is tolerated; an untrained or mis-wired model gets about a quarter right.
    """

    def no_network(*args, **kwargs):
        raise AssertionError("the shipped model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    card = inference.load_model_card()
    held_out = (inference.DEFAULT_MODEL_DIR / card["split"]["validation_list"]).read_text().split()
    picks = {}
    for rel in held_out:
        picks.setdefault(rel.split("/")[0], []).append(rel)
    chosen = [rel for folder in sorted(picks) for rel in picks[folder][:5]]
    results = Predictor().predict([shared_data / rel for rel in chosen])
    folder_to_class = {"glioma": "glioma", "meningioma": "meningioma", "notumor": "normal", "pituitary": "pituitary"}
    expected = [folder_to_class[rel.split("/")[0]] for rel in chosen]
    wrong_type = [rel for rel, want, r in zip(chosen, expected, results) if r.classification.label != want]
    wrong_presence = [rel for rel, want, r in zip(chosen, expected, results)
                      if r.presence.label != ("normal" if want == "normal" else "tumor")]
    assert len(chosen) == 20
    assert len(wrong_type) <= 1, f"tumor type wrong for {wrong_type}"
    assert len(wrong_presence) <= 1, f"presence wrong for {wrong_presence}"
    for result in results:
        assert np.isclose(sum(result.classification.probabilities.values()), 1.0, atol=1e-4)
        assert result.model.sha256 == card["weights_sha256"]


def test_evaluate_command_writes_the_agreed_json_and_a_per_image_list(tiny_model, tiny_data, tmp_path):
    """Other tools parse this JSON; a renamed key would break them silently."""
    import csv

    from mlcore import evaluate

    out_json, out_csv = tmp_path / "report.json", tmp_path / "predictions.csv"
    evaluate.main([str(tiny_data), "--model-dir", str(tiny_model), "--json", str(out_json),
                   "--predictions", str(out_csv)])
    report = json.loads(out_json.read_text())
    assert report["n"] == 12
    assert set(report["models"]) == {"presence", "classifier"}
    assert set(report["models"]["classifier"]) == {"name", "version", "sha256"}
    assert set(report["presence"]) >= {"accuracy", "precision", "recall", "f1", "confusion_matrix", "labels"}
    assert report["presence"]["labels"] == ["normal", "tumor"]
    classification = report["classification"]
    assert set(classification) >= {"accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class",
                                   "confusion_matrix", "labels"}
    assert set(classification["per_class"]["glioma"]) == {"precision", "recall", "f1", "support"}
    assert all(0.0 <= classification[k] <= 1.0 for k in ("accuracy", "precision_macro", "f1_macro"))
    assert report["seconds_per_image"] > 0

    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 12
    assert {row["true_type"] for row in rows} == {"glioma", "meningioma", "normal", "pituitary"}
    correct = sum(int(row["correct"]) for row in rows)
    assert correct == round(classification["accuracy"] * 12)
    assert all(abs(sum(float(row[f"p_{c}"]) for c in classification["labels"]) - 1) < 1e-3 for row in rows)


@pytest.mark.parametrize("block", [3, 4, 8])
def test_front_and_tail_compose_to_the_whole_network(block):
    """Training caches the front and trains the tail: they must compute the same as the network."""
    from mlcore.network import build_network, split_network

    network = build_network(weights=None, image_size=71)
    front, tail = split_network(network, block)
    x = np.random.default_rng(block).uniform(-1, 1, (2, 71, 71, 3)).astype("float32")
    whole = network.predict(x, verbose=0)
    composed = tail.predict(front.predict(x, verbose=0), verbose=0)
    for key in whole:
        np.testing.assert_allclose(composed[key], whole[key], atol=1e-5)


@pytest.mark.parametrize("block", [1, 13])
def test_cutting_outside_the_cacheable_blocks_is_refused(block):
    from mlcore.network import build_network, split_network

    with pytest.raises(ValueError, match="choose 2..12"):
        split_network(build_network(weights=None, image_size=71), block)
