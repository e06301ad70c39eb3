"""The Xception network: one ImageNet backbone, two heads (presence, type).

Why one backbone with two heads: both stages look at the same slice, so they share
the expensive features; the shipped file holds ~21M parameters instead of ~42M
(42 MB in float16 rather than 84 MB), and a worker computes the backbone once per
scan for both stages.

Keras (and TensorFlow) are imported inside functions so that importing this module,
or anything in the web process, never loads TensorFlow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlcore.constants import CLASS_NAMES, IMAGE_SIZE, PRESENCE_LABELS
from mlcore.dataset import file_sha256 as sha256_of  # re-exported: the weights' identity

if TYPE_CHECKING:  # pragma: no cover
    import keras

PRESENCE_OUTPUT = "presence"
CLASSIFICATION_OUTPUT = "classification"


class WeightsMismatchError(RuntimeError):
    """The weights file is not the one the model card describes, or does not fit the network."""


def _keras():
    # Pin the backend before the first import; the GPU machine runs torch, this one TF.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def resolve_backbone_weights(weights: str | Path | None) -> str | None:
    """``"imagenet"`` stays Keras' own download/cache path; anything else must be a file."""
    if weights is None or str(weights) in ("", "none"):
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    return str(path)


def build_network(*, weights: str | Path | None = None, image_size: int = IMAGE_SIZE, dropout: float = 0.3,
                  name: str = "neuroscan"):
    """Xception backbone + global average pooling + two softmax heads.

    ``weights`` initialises the backbone: ``"imagenet"`` (Keras downloads or reads its
    cache), a path to Keras' no-top Xception weights file, or None (random; used
    before loading a trained model).
    """
    keras = _keras()
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    backbone = keras.applications.Xception(
        include_top=False, weights=resolve_backbone_weights(weights), input_tensor=inputs
    )
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    presence = keras.layers.Dense(len(PRESENCE_LABELS), activation="softmax", dtype="float32", name=PRESENCE_OUTPUT)(
        features
    )
    classification = keras.layers.Dense(
        len(CLASS_NAMES), activation="softmax", dtype="float32", name=CLASSIFICATION_OUTPUT
    )(features)
    return keras.Model(inputs, {PRESENCE_OUTPUT: presence, CLASSIFICATION_OUTPUT: classification}, name=name)


def build_ensemble(members: int, *, image_size: int = IMAGE_SIZE):
    """``members`` independently trained networks behind one input, probabilities averaged.

    With one member this is :func:`build_network`. Weights are ordered member by
    member, so :func:`copy_weights` from trained single networks fills it in order.
    """
    if members == 1:
        return build_network(image_size=image_size)
    keras = _keras()
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    outputs = [build_network(image_size=image_size, name=f"member{k}")(inputs) for k in range(members)]
    averaged = {
        key: keras.layers.Average(name=f"{key}_mean", dtype="float32")([output[key] for output in outputs])
        for key in (PRESENCE_OUTPUT, CLASSIFICATION_OUTPUT)
    }
    return keras.Model(inputs, averaged, name="neuroscan_ensemble")


def copy_weights(target, sources: list) -> None:
    """Assign the weights of ``sources`` (in order) to ``target``, as float32, checking shapes."""
    values = [np.asarray(v, dtype=np.float32) for source in sources for v in source.weights]
    if len(values) != len(target.weights):
        raise WeightsMismatchError(f"{len(values)} source arrays for {len(target.weights)} target weights")
    for variable, value in zip(target.weights, values):
        if tuple(variable.shape) != value.shape:
            raise WeightsMismatchError(f"{variable.path}: {value.shape} does not fit {variable.shape}")
        variable.assign(value)


def cut_layer_name(network, block: int) -> str:
    """Name of the layer whose output ends Xception block ``block`` (the residual add).

    Blocks 2..4 (entry flow) end with a pooled branch added to a strided residual;
    blocks 5..12 (middle flow) with their third separable convolution added to the input.
    """
    keras = _keras()
    names = {layer.name for layer in network.layers}
    last = f"block{block}_pool" if 2 <= block <= 4 else f"block{block}_sepconv3_bn"
    if not 2 <= block <= 12 or last not in names:
        raise ValueError(f"Xception has no block {block} to cut after (choose 2..12)")
    ending = network.get_layer(last).output
    for layer in network.layers:
        if isinstance(layer, keras.layers.Add) and any(tensor is ending for tensor in layer.input):
            return layer.name
    raise ValueError(f"no residual add follows {last}")


def split_network(network, block: int):
    """(front, tail): front maps images to block ``block``'s output, tail maps that to the heads.

    Both share layer objects with ``network``: training the tail trains the network.
    """
    keras = _keras()
    cut = network.get_layer(cut_layer_name(network, block)).output
    front = keras.Model(network.input, cut, name="front")
    tail = keras.Model(cut, network.output, name="tail")
    return front, tail


def save_weights(network, path: str | Path) -> str:
    """Store every weight as float16 in an .npz archive; returns the file's SHA-256.

    float16 halves the shipped size (about 42 MB); the accuracy cost is measured and
    recorded in the model card by the training command.
    """
    arrays = {f"{index:04d}|{variable.path}": np.asarray(variable).astype(np.float16)
              for index, variable in enumerate(network.weights)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return sha256_of(path)


def load_weights(network, path: str | Path) -> None:
    """Load an archive written by :func:`save_weights`, checking names and shapes."""
    with np.load(path) as archive:
        keys = sorted(archive.files)
        if len(keys) != len(network.weights):
            raise WeightsMismatchError(
                f"{path} holds {len(keys)} arrays, the network expects {len(network.weights)}"
            )
        for key, variable in zip(keys, network.weights):
            array = archive[key]
            if tuple(array.shape) != tuple(variable.shape):
                raise WeightsMismatchError(f"{key}: shape {array.shape} does not fit {variable.path} {variable.shape}")
            variable.assign(array.astype(variable.dtype))
