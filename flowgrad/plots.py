"""PNG figures: training curves and labelled image grids (matplotlib, headless Agg backend).

matplotlib is imported lazily, with the Agg backend, so importing flowgrad stays fast and
plotting works on machines without a display.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(rows: Sequence[dict[str, float]], path: str, title: str = "") -> str:
    """Loss (left) and accuracy (right, if recorded) per epoch, train and validation."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    keys = {k for r in rows for k in r}
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "accuracy" in keys else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for prefix, style in (("", "-"), ("val_", "--"), ("test_", ":")):
            name = prefix + key
            if name in keys:
                ax.plot(epochs, [r.get(name, math.nan) for r in rows], style,
                        label={"": "train", "val_": "validation", "test_": "test"}[prefix])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def to_display(image: np.ndarray) -> np.ndarray:
    """One image ``(C, H, W)`` / ``(H, W)`` / ``(D,)`` as something ``imshow`` can draw:
    RGB for 3 channels, otherwise the channel mean in gray; a 1-d signal becomes a 1-row strip."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 1:
        return image[None, :]
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[0] == 3:
        return np.moveaxis(image, 0, -1)
    return image.reshape(-1, *image.shape[-2:]).mean(axis=0)


def image_grid(images: Sequence[np.ndarray], labels: Sequence[str], path: str,
               value_range: tuple[float, float] | None = None, columns: int | None = None,
               title: str = "", cmap: str = "gray") -> str:
    """Save images in a grid, each titled with its label; ``value_range`` fixes the gray scale
    (None: each image stretched to its own range)."""
    plt = _pyplot()
    n = len(images)
    columns = columns or min(n, 5)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.5 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        shown = to_display(image)
        if shown.ndim == 3:
            lo, hi = value_range or (shown.min(), shown.max())
            ax.imshow(np.clip((shown - lo) / max(hi - lo, 1e-12), 0, 1), interpolation="nearest")
        else:
            lo, hi = value_range or (None, None)
            ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                      aspect="auto" if shown.shape[0] == 1 else "equal")
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
