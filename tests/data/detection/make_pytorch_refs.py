"""Regenerate PyTorch's GridSample and AffineGrid results for tests/test_detection.py
(and CumProd's for tests/test_ops_indexing.py).

    .venv/bin/pip install torch==2.13.0      # the bench extra; not needed to run the tests
    .venv/bin/python tests/data/detection/make_pytorch_refs.py

Writes ``pytorch_refs.npz``: per case (``gs-<mode>-<padding>-<align>``, ``gs5d``,
``ag-<size>-<align>``, ``cumprod-<exclusive>-<reverse>``) the float64 inputs, the output-gradient seed, and PyTorch's output and
autograd gradients, so the tests compare flowgrad with PyTorch on every CI run without torch.
"""
from __future__ import annotations

import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
AFFINE = (((2, 3, 4, 5), False), ((2, 3, 4, 5), True), ((2, 1, 3, 4, 5), False),
          ((2, 1, 3, 4, 5), True), ((2, 3, 1, 4), False))


def grid_sample(out, key, rng, x_shape, grid_shape, low, mode, padding, align):
    x = rng.standard_normal(x_shape)
    grid = rng.uniform(-low, low, size=grid_shape)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(grid, requires_grad=True)
    ty = torch.nn.functional.grid_sample(tx, tg, mode=mode, padding_mode=padding,
                                         align_corners=align)
    seed = rng.standard_normal(tuple(ty.shape))
    (ty * torch.tensor(seed)).sum().backward()
    out.update({f"{key}/x": x, f"{key}/grid": grid, f"{key}/seed": seed,
                f"{key}/y": ty.detach().numpy(), f"{key}/gx": tx.grad.numpy(),
                f"{key}/ggrid": tg.grad.numpy()})


def affine_grid(out, key, rng, size, align):
    dims = len(size) - 2
    theta = rng.standard_normal((size[0], dims, dims + 1))
    tt = torch.tensor(theta, requires_grad=True)
    ty = torch.nn.functional.affine_grid(tt, list(size), align_corners=align)
    seed = rng.standard_normal(tuple(ty.shape))
    (ty * torch.tensor(seed)).sum().backward()
    out.update({f"{key}/theta": theta, f"{key}/seed": seed, f"{key}/y": ty.detach().numpy(),
                f"{key}/gtheta": tt.grad.numpy()})


def cumprod(out, rng) -> None:
    """CumProd over rows holding zeros, in every exclusive/reverse form (its gradient at
    zeros is the delicate part; tests/test_ops_indexing.py compares with it)."""
    x = np.array([[1.5, 0.0, 2.0, -0.5, 0.0, 3.0], [0.3, 2.0, 0.0, 1.2, -1.1, 0.7],
                  [0.9, 1.3, 0.8, -2.0, 2.2, 0.5]])
    g = np.random.default_rng(7).standard_normal(x.shape)
    out.update({"cumprod/x": x, "cumprod/seed": g})
    for exclusive in (False, True):
        for reverse in (False, True):
            t = torch.tensor(x, requires_grad=True)
            tt = torch.flip(t, [1]) if reverse else t
            ty = torch.cumprod(tt, 1)
            if exclusive:
                ty = torch.cat([torch.ones_like(ty[:, :1]), ty[:, :-1]], 1)
            ty = torch.flip(ty, [1]) if reverse else ty
            (ty * torch.tensor(g)).sum().backward()
            out[f"cumprod-{exclusive}-{reverse}/y"] = ty.detach().numpy()
            out[f"cumprod-{exclusive}-{reverse}/gx"] = t.grad.numpy()


def main() -> None:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for mode in MODES:
        for padding in PADDINGS:
            for align in (False, True):
                grid_sample(out, f"gs-{mode}-{padding}-{align}", rng, (2, 3, 5, 6),
                            (2, 4, 3, 2), 1.5, mode, padding, align)
    grid_sample(out, "gs5d", rng, (1, 2, 3, 4, 5), (1, 2, 3, 2, 3), 1.2, "bilinear",
                "reflection", False)
    for size, align in AFFINE:
        affine_grid(out, f"ag-{'x'.join(map(str, size))}-{align}", rng, size, align)
    cumprod(out, rng)
    np.savez_compressed(os.path.join(HERE, "pytorch_refs.npz"), **out)
    print(f"wrote pytorch_refs.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
