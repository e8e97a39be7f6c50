"""Gradient cases for the normalization ops and dropout (training and evaluation modes)."""
from flowgrad.testing import Case, positive

CASES = {
    "batch_norm": [
        Case([(3, 2, 3, 4), (2,), (2,), (2,), positive((2,))], id="eval-2d"),
        Case([(4, 3), (3,), (3,), (3,), positive((3,))], id="eval-dense"),
        Case([(3, 2, 3, 4), (2,), (2,), (2,), positive((2,))], training=True, id="train-2d"),
        Case([(4, 3, 5), (3,), (3,), (3,), positive((3,))], {"epsilon": 1e-3},
             training=True, id="train-1d"),
    ],
    "instance_norm": [Case([(2, 3, 4, 3), (3,), (3,)]),
                      Case([(2, 2, 5), (2,), (2,)], {"epsilon": 1e-3}, id="1d")],
    "layer_norm": [Case([(3, 5), (5,), (5,)], id="last-axis"),
                   Case([(2, 3, 4), (3, 4), None], {"axis": 1}, id="two-axes-no-bias"),
                   Case([(2, 3, 4), (1, 4), (4,)], {"axis": -2}, id="broadcast-scale")],
    "lrn": [Case([(2, 5, 3, 2)], {"size": 3, "alpha": 0.1, "beta": 0.75, "bias": 1.0}),
            Case([(2, 6, 3)], {"size": 4, "alpha": 0.2, "beta": 0.5, "bias": 2.0},
                 id="even-size")],
    "dropout": [Case([(4, 5)], {"ratio": 0.3}, training=True, id="train"),
                Case([(4, 5)], {"ratio": 0.3}, id="eval"),
                Case([(4, 5)], {"ratio": 0.4, "training_mode": True, "seed": 3},
                     id="forced-seeded"),
                Case([(4, 5)], {"ratio": 0.4, "training_mode": False}, training=True,
                     id="forced-off")],
}

CASES.update({
    "rms_normalization": [Case([(3, 5), (5,)], id="last-axis"),
                 Case([(2, 3, 4), (3, 4)], {"axis": 1, "epsilon": 1e-3}, id="two-axes"),
                 Case([(2, 3, 4), (1, 4)], {"axis": -2}, id="broadcast-scale"),
                 Case([(2, 3), (2, 3)], {"axis": 0}, id="batch-axis")],
    "group_norm": [Case([(2, 4, 3, 2), (4,), (4,)], {"num_groups": 2}, id="2d"),
                   Case([(3, 6, 4), (6,), (6,)], {"num_groups": 3, "epsilon": 1e-2}, id="1d"),
                   Case([(2, 3, 5), (3,), (3,)], {"num_groups": 1}, id="one-group")],
    "lp_normalization": [Case([(3, 4)], id="l2"),
                         Case([(2, 3, 4)], {"axis": 1, "p": 1}, id="l1-axis1"),
                         Case([(4, 3)], {"axis": 0, "p": 2}, id="l2-batch-axis")],
    "mean_variance_normalization": [Case([(2, 3, 2, 3)], id="default-axes"),
                                    Case([(3, 4, 5)], {"axes": [2]}, id="last-axis")],
})
