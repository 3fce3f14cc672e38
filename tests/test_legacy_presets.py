"""The presets built from pieces step exactly like the separate classes they replaced.

`tests/legacy` is a frozen copy of SAM, ASAM, RS and SA as they were before
the rules were composed from when/where/how pieces. Both run inside the same
`FlatMinimaModel` from the same weights and seed, eagerly (so no graph
rewrite reorders floating-point operations differently in the two step
graphs), and the weights must be bit-identical after several steps: every
random draw, every norm and every projection is the same computation.
"""

import keras
import numpy as np
import pytest
from legacy import random_smoothing as legacy_rs
from legacy import sam as legacy_sam
from legacy import sharpness_aware as legacy_sa

import keras_flat
from keras_flat import algorithms

from helpers import mlp
from helpers import regression_data

STEPS = 4

CASES = {
    "sam": (algorithms.SAM, legacy_sam.SAM, dict(rho=0.1)),
    "sam interval": (algorithms.SAM, legacy_sam.SAM, dict(rho=0.1, interval=2)),
    "asam": (algorithms.ASAM, legacy_sam.ASAM, dict(rho=0.5, eta=0.02)),
    "rs": (algorithms.RandomSmoothing, legacy_rs.RandomSmoothing, dict(rho=0.5)),
    "rs options": (algorithms.RandomSmoothing, legacy_rs.RandomSmoothing,
                   dict(rho=0.5, antithetic=True, perturbed_lr_scale=0.5, interval=3)),
    "rs tolerance, no projection": (algorithms.RandomSmoothing, legacy_rs.RandomSmoothing,
                                    dict(rho=0.5, tolerance=0.3, project=False)),
    "sa": (algorithms.SharpnessAware, legacy_sa.SharpnessAware, dict(rho=0.2)),
    "sa options": (algorithms.SharpnessAware, legacy_sa.SharpnessAware,
                   dict(rho=0.2, examples=3, jitter=0.01, center=True, antithetic=True)),
    "sa tolerance": (algorithms.SharpnessAware, legacy_sa.SharpnessAware,
                     dict(rho=0.2, tolerance=0.5, perturbed_lr_scale=2.0, interval=2)),
}


def _train(algorithm, batchnorm, optimizer):
    inner = mlp(batchnorm=batchnorm)
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=3)
    model.compile(optimizer=optimizer, loss="mse", run_eagerly=True)
    x, y = regression_data(n=32)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return [np.array(v) for v in inner.weights]


@pytest.mark.parametrize("batchnorm", [False, True], ids=["mlp", "batchnorm"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_steps_bit_identical_to_the_separate_class(case, batchnorm):
    new, old, kwargs = CASES[case]
    expected = _train(old(**kwargs), batchnorm, keras.optimizers.SGD(0.1, momentum=0.5))
    got = _train(new(**kwargs), batchnorm, keras.optimizers.SGD(0.1, momentum=0.5))
    start = [np.array(v) for v in mlp(batchnorm=batchnorm).weights]
    # The run moved the weights, so equality is not that of two idle runs.
    assert any(np.any(a != b) for a, b in zip(expected, start))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
