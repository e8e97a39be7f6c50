"""Cases for flowgrad/ops/tensor.py: expand, tile, shape, size, cast, constant_of_shape, range,
eye_like and the random tensors."""
import numpy as np

from flowgrad.testing import Case

I64 = np.int64

CASES = {
    "expand": [Case([(3, 1), None], {"shape": [2, 3, 4]}, id="grow"),
               Case([(2, 3, 4), None], {"shape": [1, 4]}, id="two-way")],
    "tile": [Case([(2, 3), None], {"repeats": [2, 3]}),
             Case([(2, 1, 3), None], {"repeats": [1, 4, 2]}, id="3d")],
    "shape": [Case([(2, 3, 4)]), Case([(2, 3, 4)], {"start": 1, "end": -1}, id="start-end")],
    "size": [Case([(2, 3)])],
    # float -> float casts change precision, which finite differences cannot follow; their
    # pass-through gradient is checked in tests/test_ops_indexing.py
    "cast": [Case([(3, 4)], {"to": "int64"}, id="to-int-zero-grad"),
             Case([(3, 4)], {"to": "bool"}, id="to-bool-zero-grad")],
    "constant_of_shape": [Case([None], {"shape": [2, 3], "value": 1.5}, id="attr"),
                          Case([None], {"shape": [2, 0], "dtype": "int64"}, id="empty-int")],
    "range": [Case([np.array(0.5), np.array(3.0), np.array(0.7)], id="float"),
              Case([np.array(5, I64), np.array(-3, I64), np.array(-2, I64)], id="int")],
    # forward-only: the config, shape rule and dtypes are checked
    "eye_like": [Case([(3, 4)], {"k": 1}), Case([np.zeros((4, 2), I64)], {"k": -1,
                                                                         "dtype": "float32"},
                                             id="int-in-float-out")],
    "random_normal": [Case([None], {"shape": [2, 3], "mean": 1.0, "scale": 0.5}, id="shape"),
                      Case([(4, 2)], {"seed": 3}, id="like-seeded")],
    "random_uniform": [Case([None], {"shape": [5], "low": -1.0, "high": 2.0}, id="shape"),
                       Case([np.zeros((2, 2), I64)], {"dtype": "float32"}, id="like-int")],
    "bernoulli": [Case([lambda rng: rng.uniform(0, 1, (3, 4))]),
                  Case([lambda rng: rng.uniform(0, 1, (5,))], {"dtype": "int64", "seed": 0},
                       id="seeded-int")],
    "multinomial": [Case([(3, 4)], {"sample_size": 5}),
                    Case([(2, 3)], {"dtype": "int64", "seed": 1}, id="seeded")],
}
