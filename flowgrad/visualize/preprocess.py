"""What an imported model expects of its input: value range, channel order, mean and std.

An optimized image lives in display space — RGB, values in the visualization's range (0–1 by
default) — because that is what the parameterization squashes into and what is saved.  A
model trained on ImageNet expects something else: torchvision models ``(x - mean) / std`` of
RGB in 0–1, Caffe-era models BGR pixels in 0–255 minus a per-channel mean.  Feeding display
images to such a model silently visualizes the wrong thing, so :class:`Preprocess` declares
the model's convention and is applied between the parameterization (and the transforms) and
the network, with its exact backward (an affine map per channel and a permutation):

    network input = (low + (high - low) * x[channels in model order] - mean) / std

with ``mean`` and ``std`` in the model's channel order and value units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import FlowgradError, did_you_mean

Backward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Preprocess:
    """The model's input convention: ``value_range`` it reads pixels in, ``channel_order``
    (``"RGB"`` or ``"BGR"``), then ``mean`` and ``std`` per channel (one number: every
    channel) in that order and range."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in np.atleast_1d(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in np.atleast_1d(self.std)))
        if self.channel_order not in ("RGB", "BGR"):
            raise FlowgradError(f"channel order must be RGB or BGR, got "
                                f"'{self.channel_order}'")
        if any(s == 0 for s in self.std):
            raise FlowgradError("a preprocessing std of 0 divides by zero")

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, Backward]:
        """Map a display batch ``(N, C, H, W)`` (values in 0–1) to the network's input."""
        c = x.shape[1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, c):
                raise FlowgradError(f"the preprocessing {name} has {len(values)} values but "
                                    f"the input has {c} channels")
        flip = self.channel_order == "BGR"
        if flip and c != 3:
            raise FlowgradError(f"BGR channel order needs 3 channels, the input has {c}")
        low, high = self.value_range
        shape = (1, -1, 1, 1)
        mean = np.asarray(self.mean, dtype=x.dtype).reshape(shape)
        std = np.asarray(self.std, dtype=x.dtype).reshape(shape)
        gain, offset = (high - low) / std, (low - mean) / std
        y = (x[:, ::-1] if flip else x) * gain + offset

        def backward(g: np.ndarray) -> np.ndarray:
            g = g * gain
            return g[:, ::-1] if flip else g

        return y, backward


#: common conventions: torchvision's ImageNet normalization, Caffe's (BGR, 0–255, mean
#: subtracted: VGG, ResNet-50 of Caffe and Keras' ``caffe`` mode), Inception's [-1, 1]
#: (Keras' ``tf`` mode) and none
PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "imagenet_caffe": Preprocess(mean=(103.939, 116.779, 123.68), std=(1.0,),
                                 channel_order="BGR", value_range=(0.0, 255.0)),
    "inception": Preprocess(value_range=(-1.0, 1.0)),
    "none": Preprocess(),
}


def preprocess_of(spec: "str | Preprocess | None") -> Preprocess | None:
    """A :class:`Preprocess` from a preset name, one given, or None (feed display images)."""
    if spec is None or isinstance(spec, Preprocess):
        return spec
    if spec not in PRESETS:
        raise FlowgradError(f"unknown preprocessing '{spec}'{did_you_mean(spec, PRESETS)} "
                            f"(presets: {', '.join(PRESETS)})")
    return PRESETS[spec]
