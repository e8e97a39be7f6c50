"""Datasets shipped inside the package, so the demo and the tests run offline.

``digits.npz`` holds the 1,797 8×8 handwritten digits of the UCI "optdigits" test set, the copy
scikit-learn bundles as ``sklearn/datasets/data/digits.csv.gz`` (pixels 0..16, labels 0..9).
It was made once from the scikit-learn 1.9.1 wheel::

    a = np.loadtxt(gzip.open("digits.csv.gz", "rt"), delimiter=",", dtype=np.int64)
    np.savez_compressed("digits.npz", images=a[:, :64].reshape(-1, 8, 8).astype(np.uint8),
                        labels=a[:, 64].astype(np.uint8))

Storing uint8 and compressing keeps it at 45 kB; scikit-learn is not needed at run time.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

#: the digits' pixels count "on" bits in a 4×4 block, so 16 is the brightest value
DIGITS_MAX = 16.0


def load_digits(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``(x, y)``: ``x`` is ``(1797, 64)`` scaled to [0, 1], ``y`` is int64 labels.

    Images are flattened row by row (as scikit-learn's ``data``); reshape to ``(N, 1, 8, 8)``
    for convolutional graphs (the trainer does this from the graph's input shape).
    """
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f:
        with np.load(f) as data:
            images, labels = data["images"], data["labels"]
    x = (images.reshape(len(images), -1) / DIGITS_MAX).astype(dtype)
    return x, labels.astype(np.int64)
