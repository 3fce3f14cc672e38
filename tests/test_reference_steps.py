"""One step of each algorithm against a reference computed by hand in NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms.oracle import GradientOracle

from helpers import NumpyMLP
from helpers import flat_dot
from helpers import flat_norm
from helpers import make_oracle
from helpers import mlp
from helpers import np_project_out
from helpers import regression_data

# Part of the compatibility subset run on the oldest supported TensorFlow/Keras.
pytestmark = pytest.mark.compat

LR = 0.1
L2 = 0.01


def _setup(algorithm, sample_weight=True, batch=16, l2=L2):
    x, y = regression_data(n=batch)
    sw = np.linspace(0.0, 2.0, batch).astype("float32") if sample_weight else None
    inner = mlp(regularizer=keras.regularizers.L2(l2) if l2 else None)
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    params = [np.array(v, np.float64) for v in inner.trainable_variables]
    return model, x, y, sw, params


def _fit_one_step(model, x, y, sw):
    model.fit(x, y, sample_weight=sw, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return [np.array(v, np.float64) for v in model.inner.trainable_variables]


def _assert_close(actual, expected, atol=1e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


def test_sam_step_equals_hand_computed_step():
    rho = 0.3
    model, x, y, sw, w = _setup(algorithms.SAM(rho=rho))
    ref = NumpyMLP(l2=L2)
    g = ref.grad(w, x, y, sw)
    eps = [rho * t / flat_norm(g) for t in g]
    g_adv = ref.grad([a + e for a, e in zip(w, eps)], x, y, sw)
    expected = [a - LR * t for a, t in zip(w, g_adv)]
    _assert_close(_fit_one_step(model, x, y, sw), expected)
    # The ascent gradient is not the clean one (a bug SAM ports have had),
    # so the SAM step is not the plain step.
    diff = flat_norm([a - b for a, b in zip(g_adv, g)])
    assert diff > 0.05 * flat_norm(g)
    plain = [a - LR * t for a, t in zip(w, g)]
    assert flat_norm([a - b for a, b in zip(expected, plain)]) > 1e-3


def test_asam_step_equals_hand_computed_step():
    rho, eta = 0.5, 0.01
    model, x, y, sw, w = _setup(algorithms.ASAM(rho=rho, eta=eta))
    ref = NumpyMLP(l2=L2)
    g = ref.grad(w, x, y, sw)
    # Kernels are rescaled by T = |w| + eta, biases are not (T = 1).
    t = [np.abs(w[0]) + eta, np.ones_like(w[1]), np.abs(w[2]) + eta, np.ones_like(w[3])]
    tg = [a * b for a, b in zip(t, g)]
    eps = [rho * a * a * b / flat_norm(tg) for a, b in zip(t, g)]
    g_adv = ref.grad([a + e for a, e in zip(w, eps)], x, y, sw)
    expected = [a - LR * b for a, b in zip(w, g_adv)]
    _assert_close(_fit_one_step(model, x, y, sw), expected)
    sam_eps = [rho * b / flat_norm(g) for b in g]
    assert flat_norm([a - b for a, b in zip(eps, sam_eps)]) > 1e-2


def test_plain_step_equals_hand_computed_step():
    model, x, y, sw, w = _setup(None)
    g = NumpyMLP(l2=L2).grad(w, x, y, sw)
    _assert_close(_fit_one_step(model, x, y, sw), [a - LR * b for a, b in zip(w, g)])


class RecordingOracle(GradientOracle):
    """Records where and on which examples the algorithm asked for gradients."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def gradient(self, offset=None, subset=None):
        self.calls.append((
            None if offset is None else [np.array(o, np.float64) for o in offset],
            None if subset is None else np.array(subset.indices),
        ))
        return super().gradient(offset=offset, subset=subset)


def _eager_update(algorithm, step_seed=(5, 0), batch=16):
    model, x, y, sw, w = _setup(algorithm, batch=batch)
    model.build((None, 4))
    oracle = make_oracle(model, tf.constant(x), tf.constant(y), tf.constant(sw),
                         seed=tf.constant(step_seed, tf.int64), cls=RecordingOracle)
    ref = NumpyMLP(l2=L2)
    g = ref.grad(w, x, y, sw)
    step = algorithm.compute_update(oracle, [tf.constant(t, tf.float32) for t in g])
    update, grad_norm, perturbed = step.update, step.grad_norm, step.perturbed
    np.testing.assert_allclose(float(grad_norm), flat_norm(g), rtol=1e-5)
    return [np.array(u, np.float64) for u in update], float(perturbed), oracle.calls, (w, x, y, sw, g, ref)


@pytest.mark.parametrize("project", [True, False])
@pytest.mark.parametrize("lr_scale", [1.0, 2.5])
def test_random_smoothing_update_equals_hand_computed_update(project, lr_scale):
    rho = 0.4
    update, perturbed, calls, (w, x, y, sw, g, ref) = _eager_update(
        algorithms.RandomSmoothing(rho=rho, project=project, perturbed_lr_scale=lr_scale)
    )
    assert perturbed == 1.0
    assert len(calls) == 1
    (u, subset), = calls
    assert subset is None  # RS evaluates the whole batch.
    np.testing.assert_allclose(flat_norm(u), rho, rtol=1e-5)
    h = ref.grad([a + b for a, b in zip(w, u)], x, y, sw)
    v = np_project_out(h, g) if project else h
    if project:
        assert abs(flat_dot(v, g)) < 1e-6 * flat_norm(h) * flat_norm(g)
    expected = [lr_scale * (a + b) for a, b in zip(g, v)]
    _assert_close(update, expected)


def test_antithetic_random_smoothing_averages_opposite_points():
    rho = 0.4
    update, _, calls, (w, x, y, sw, g, ref) = _eager_update(
        algorithms.RandomSmoothing(rho=rho, antithetic=True))
    (u, _), (minus_u, _) = calls
    _assert_close(minus_u, [-t for t in u], atol=1e-7)
    hs = [ref.grad([a + b for a, b in zip(w, o)], x, y, sw) for o in (u, minus_u)]
    h = [(a + b) / 2 for a, b in zip(*hs)]
    _assert_close(update, [a + b for a, b in zip(g, np_project_out(h, g))])


def test_random_smoothing_directions_differ_between_steps():
    _, _, calls_a, _ = _eager_update(algorithms.RandomSmoothing(rho=0.4), step_seed=(5, 0))
    _, _, calls_b, _ = _eager_update(algorithms.RandomSmoothing(rho=0.4), step_seed=(5, 1))
    assert flat_norm([a - b for a, b in zip(calls_a[0][0], calls_b[0][0])]) > 0.1


@pytest.mark.parametrize(
    "examples, center, antithetic", [(1, False, False), (3, False, False),
                                     (2, True, False), (1, True, True), (1, False, True)])
def test_sharpness_aware_update_equals_hand_computed_update(examples, center, antithetic):
    rho = 0.2
    update, perturbed, calls, (w, x, y, sw, g, ref) = _eager_update(
        algorithms.SharpnessAware(rho=rho, examples=examples, center=center,
                                  antithetic=antithetic)
    )
    assert perturbed == 1.0
    # Direction on the chosen examples at w, then the gradient at w ± ρs.
    (o1, s1), *perturbed_calls = calls
    assert o1 is None
    assert len(perturbed_calls) == (2 if antithetic else 1)
    for _, subset in perturbed_calls:
        np.testing.assert_array_equal(s1, subset)
    assert len(np.unique(s1)) == examples
    # A subset's loss is its mean over the chosen examples (Keras reduction).
    sub = lambda t: t[s1]  # noqa: E731
    g_sub = ref.grad(w, sub(x), sub(y), sub(sw))
    s = [t / flat_norm(g_sub) for t in g_sub]
    offsets = [o for o, _ in perturbed_calls]
    signs = [np.sign(flat_dot(o, s)) for o in offsets]
    if antithetic:
        assert sorted(signs) == [-1.0, 1.0]
    for o, sign in zip(offsets, signs):
        _assert_close(o, [sign * rho * t for t in s], atol=1e-6)
    hs = [ref.grad([a + b for a, b in zip(w, o)], sub(x), sub(y), sub(sw)) for o in offsets]
    h = [np.mean(parts, axis=0) for parts in zip(*hs)]
    if center:
        h = [a - b for a, b in zip(h, g_sub)]
    expected = [a + b for a, b in zip(g, np_project_out(h, g))]
    _assert_close(update, expected)


def test_sharpness_aware_signs_are_random():
    signs = []
    for i in range(12):
        _, _, calls, (w, x, y, sw, g, ref) = _eager_update(
            algorithms.SharpnessAware(rho=0.2), step_seed=(9, i)
        )
        (_, s1), (o2, _) = calls
        g_sub = ref.grad(w, x[s1], y[s1], sw[s1])
        signs.append(np.sign(flat_dot(o2, g_sub)))
    assert set(signs) == {-1.0, 1.0}


def test_sharpness_aware_uses_jitter_when_the_examples_gradient_is_zero():
    # Zero sample weight on every example: the examples' gradient is zero,
    # the direction is taken at a jittered point and nothing becomes NaN.
    model, x, y, _, w = _setup(algorithms.SharpnessAware(rho=0.2), l2=0.0)
    sw = np.zeros(len(x), "float32")
    model.build((None, 4))
    oracle = make_oracle(model, tf.constant(x), tf.constant(y), tf.constant(sw),
                         seed=tf.constant([1, 0], tf.int64), cls=RecordingOracle)
    grads = [tf.zeros_like(v) for v in model.trainable_variables]
    update = model.algorithm.compute_update(oracle, grads).update
    offsets = [c[0] for c in oracle.calls]
    assert offsets[0] is None
    np.testing.assert_allclose(flat_norm(offsets[1]), 0.2 * 0.1, rtol=1e-4)  # jitter
    assert all(np.all(np.isfinite(np.array(u))) for u in update)
    # Zero-weight examples contribute nothing at any point: the step is zero.
    assert flat_norm([np.array(u) for u in update]) == 0.0


def test_tolerance_switch_takes_the_plain_branch_above_the_tolerance():
    update, perturbed, calls, (w, x, y, sw, g, ref) = _eager_update(
        algorithms.RandomSmoothing(rho=0.4, tolerance=1e-6)
    )
    assert perturbed == 0.0
    _assert_close(update, g)
    update, perturbed, _, _ = _eager_update(
        algorithms.SharpnessAware(rho=0.4, tolerance=1e6)
    )
    assert perturbed == 1.0
