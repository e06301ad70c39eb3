"""A stand-in for mlcore's Predictor with fixed answers and no TensorFlow.

tests.settings points MLCORE_PREDICTOR here, so fast tests can run the real
analysis tasks in-process (grand-challenge's fake executor). The integration
tests run a real worker with the real model instead.
"""
from dataclasses import dataclass, field

import numpy as np

PRESENCE = [0.08, 0.92]  # normal, tumor
CLASSES = [0.81, 0.09, 0.04, 0.06]  # glioma, meningioma, normal, pituitary


@dataclass(frozen=True)
class StubInfo:
    name: str = "stub-xception"
    version: str = "0.0-test"
    sha256: str = "5" * 64


@dataclass
class StubPredictor:
    info: StubInfo = field(default_factory=StubInfo)
    image_size: int = 32
    batch_sizes: list[int] = field(default_factory=list)  # one entry per forward pass
    loads: int = 0

    def predict_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert batch.shape[1:] == (self.image_size, self.image_size, 3)
        self.batch_sizes.append(len(batch))
        n = len(batch)
        return np.tile(PRESENCE, (n, 1)), np.tile(CLASSES, (n, 1))


STUB = StubPredictor()


def get_stub_predictor(model_dir) -> StubPredictor:
    """Same signature as mlcore.inference.get_predictor."""
    STUB.loads += 1
    return STUB
