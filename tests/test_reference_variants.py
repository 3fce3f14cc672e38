"""The newer rules (RWP, ARWP, GSAM, LookSAM, AE-SAM, late start) against NumPy.

Each expected step is assembled by hand from the float64 NumPy gradient of
`helpers.NumpyMLP`; random draws are reproduced from the documented streams
of `keras_flat.utils.rng` (whose own law is tested in tests/test_rng.py).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat.utils import rng

from helpers import NumpyMLP
from helpers import flat_dot
from helpers import flat_norm
from helpers import mlp
from helpers import np_project_out
from helpers import regression_data

LR = 0.1
L2 = 0.01
SEED = 3


def _model(algorithm, n=16):
    x, y = regression_data(n=n)
    inner = mlp(regularizer=keras.regularizers.L2(L2))
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=SEED)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    params = [np.array(v, np.float64) for v in inner.trainable_variables]
    return model, x, y, params


def _train(model, x, y, steps):
    """`steps` full-batch steps, one per epoch (so logs are per step)."""
    history = model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return [np.array(v, np.float64) for v in model.inner.trainable_variables], history.history


def _unit(v):
    n = flat_norm(v)
    return [t / n for t in v] if n > 0 else [np.zeros_like(t) for t in v]


def _assert_close(actual, expected, atol=2e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=2e-5)


def _sgd(w, update):
    return [a - LR * u for a, u in zip(w, update)]


def _sam_gradient(ref, w, x, y, rho):
    g = ref.grad(w, x, y)
    return g, ref.grad([a + rho * d for a, d in zip(w, _unit(g))], x, y)


# ---- GSAM ----------------------------------------------------------------


def test_gsam_step_subtracts_the_clean_gradient_orthogonal_to_the_sam_gradient():
    rho, alpha = 0.3, 0.4
    model, x, y, w = _model(algorithms.GSAM(rho=rho, gap_weight=alpha))
    ref = NumpyMLP(l2=L2)
    g, h = _sam_gradient(ref, w, x, y, rho)
    g_perp = np_project_out(g, h)
    assert flat_norm(g_perp) > 1e-3 * flat_norm(g)  # The term is not negligible.
    expected = _sgd(w, [a - alpha * b for a, b in zip(h, g_perp)])
    actual, _ = _train(model, x, y, 1)
    _assert_close(actual, expected)
    # ...and alpha = 0 is exactly SAM.
    model, *_ = _model(algorithms.GSAM(rho=rho, gap_weight=0.0))
    _assert_close(_train(model, x, y, 1)[0], _sgd(w, h))


# ---- LookSAM --------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_looksam_reuses_the_last_sam_steps_orthogonal_direction(k):
    rho, alpha, steps = 0.3, 0.7, 4
    model, x, y, w = _model(algorithms.LookSAM(rho=rho, interval=k, reuse_weight=alpha))
    ref = NumpyMLP(l2=L2)
    stored = None
    flags = []
    for step in range(steps):
        if step % k == 0:
            g, h = _sam_gradient(ref, w, x, y, rho)
            stored = _unit(np_project_out(h, g))
            update = h
        else:
            g = ref.grad(w, x, y)
            update = [a + alpha * flat_norm(g) * b for a, b in zip(g, stored)]
            # The reused part really is applied (a lost store would make it 0).
            assert flat_norm([u - a for u, a in zip(update, g)]) > 0.5 * alpha * flat_norm(g)
        flags.append(1.0 if step % k == 0 else 0.0)
        w = _sgd(w, update)
    actual, history = _train(model, x, y, steps)
    assert history["perturbed"] == flags
    _assert_close(actual, w)
    stored_now = [np.array(model.algorithm_state.weights[i]) for i in
                  range(len(model.algorithm_state.weights)) if "direction" in
                  model.algorithm_state.weights[i].path]
    np.testing.assert_allclose(flat_norm(stored_now), 1.0, rtol=1e-5)


# ---- RWP and ARWP -------------------------------------------------------------


def _filter_std(w, sigma, include_offsets):
    out = []
    for t in w:
        if t.ndim >= 2:
            out.append(sigma * np.sqrt(np.sum(t ** 2, axis=tuple(range(t.ndim - 1)),
                                              keepdims=True)))
        else:
            out.append(sigma * np.sqrt(np.sum(t ** 2)) * np.ones_like(t) if include_offsets
                       else np.zeros_like(t))
    return out


def _normals(step, w):
    """The filter noise stream (number 5) of training step `step`: one flat draw, split."""
    stream = rng.fold_in(tf.constant([SEED, step], tf.int64), 5)
    flat = np.array(rng.normal([sum(t.size for t in w)], stream), np.float64)
    return [z.reshape(t.shape) for z, t in zip(np.split(flat, np.cumsum([t.size for t in w])[:-1]), w)]


@pytest.mark.parametrize("include_offsets", [False, True])
def test_rwp_mixes_the_clean_gradient_with_one_at_filter_wise_noise(include_offsets):
    sigma, weight = 0.2, 0.3  # `weight` is the official scripts' --lambda, on h.
    model, x, y, w = _model(algorithms.RWP(sigma=sigma, perturbed_weight=weight,
                                           include_offsets=include_offsets))
    ref = NumpyMLP(l2=L2)
    std = _filter_std(w, sigma, include_offsets)
    noise = [s * z for s, z in zip(std, _normals(0, w))]
    if not include_offsets:
        assert flat_norm([noise[1], noise[3]]) == 0.0  # Biases stay put.
    # Each kernel column (an output unit) is perturbed relative to its own norm.
    assert std[0].shape == (1, w[0].shape[1]) and np.ptp(std[0]) > 0
    g = ref.grad(w, x, y)
    h = ref.grad([a + e for a, e in zip(w, noise)], x, y)
    expected = _sgd(w, [(1 - weight) * a + weight * b for a, b in zip(g, h)])
    _assert_close(_train(model, x, y, 1)[0], expected)


def _fisher_sums(t, per_filter):
    """A variable's squared gradient summed over each filter (kernel) or kept (vector)."""
    if t.ndim > 1:
        return np.sum(t ** 2, axis=tuple(range(t.ndim - 1)), keepdims=True)
    return np.sum(t ** 2, keepdims=True) if per_filter else t ** 2


def _fisher_state(model):
    """ARWP's accumulated sums, in the order of the trainable variables."""
    found = {v.path.split("/")[-1]: np.array(v, np.float64)
             for v in model.algorithm_state.weights if "fisher" in v.path}
    return [found[f"where_fisher_{i}"] for i in range(len(found))]


@pytest.mark.parametrize("include_offsets", [False, True])
def test_arwp_accumulates_the_squared_perturbed_gradient_per_filter(include_offsets):
    # The official m-ARWP code (train_marwp.py) sums the squared gradient taken
    # at the *perturbed* point, per output filter of a kernel and per element of
    # a perturbed vector, and divides each noise std by sqrt(1 + eta * sum).
    sigma, weight, eta, beta, steps = 0.2, 0.5, 3.0, 0.9, 3
    model, x, y, w = _model(algorithms.ARWP(sigma=sigma, perturbed_weight=weight, adaptation=eta,
                                            ema_decay=beta, include_offsets=include_offsets))
    ref = NumpyMLP(l2=L2)
    fisher = [np.zeros_like(_fisher_sums(t, not include_offsets)) for t in w]
    for step in range(steps):
        std = [s / np.sqrt(1.0 + eta * f)
               for s, f in zip(_filter_std(w, sigma, include_offsets), fisher)]
        noise = [s * z for s, z in zip(std, _normals(step, w))]
        g = ref.grad(w, x, y)
        h = ref.grad([a + e for a, e in zip(w, noise)], x, y)
        # A variable that is not perturbed (a bias without include_offsets) keeps no sum.
        fisher = [beta * f + _fisher_sums(t, not include_offsets)
                  if t.ndim > 1 or include_offsets else f for f, t in zip(fisher, h)]
        w = _sgd(w, [(1 - weight) * a + weight * b for a, b in zip(g, h)])
    # The adaptation was active on every perturbed variable.
    assert min(float(np.min(f)) for f, t in zip(fisher, w) if t.ndim > 1 or include_offsets) > 0
    _assert_close(_train(model, x, y, steps)[0], w)
    for actual, expected in zip(_fisher_state(model), fisher):
        np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=1e-4)


def test_arwp_leaves_its_sums_alone_on_steps_that_do_not_perturb():
    sigma, eta, beta = 0.2, 3.0, 0.9
    model, x, y, w = _model(algorithms.ARWP(sigma=sigma, adaptation=eta, ema_decay=beta, interval=2))
    ref = NumpyMLP(l2=L2)
    noise = [s * z for s, z in zip(_filter_std(w, sigma, False), _normals(0, w))]
    g = ref.grad(w, x, y)
    h = ref.grad([a + e for a, e in zip(w, noise)], x, y)
    fisher = [_fisher_sums(t, True) * (t.ndim > 1) for t in h]  # Biases are not perturbed.
    _train(model, x, y, 2)  # Step 0 perturbs, step 1 is plain.
    for actual, expected in zip(_fisher_state(model), fisher):
        np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=1e-4)
    # Not the clean gradient's (the rule before the perturbed one).
    assert not np.allclose(_fisher_state(model)[0].reshape(fisher[0].shape),
                           _fisher_sums(g[0], True), rtol=1e-3)


# ---- Late start and AE-SAM --------------------------------------------------


@pytest.mark.parametrize("start", [2, 0.5])
def test_late_start_takes_plain_steps_before_it(start):
    rho, steps = 0.3, 4
    model, x, y, w = _model(algorithms.SAM(rho=rho, start=start))
    ref = NumpyMLP(l2=L2)
    for step in range(steps):
        g, h = _sam_gradient(ref, w, x, y, rho)
        w = _sgd(w, h if step >= 2 else g)  # 0.5 of 4 planned steps is step 2.
    actual, history = _train(model, x, y, steps)
    assert history["perturbed"] == [0.0, 0.0, 1.0, 1.0]
    _assert_close(actual, w)


def test_fractional_start_without_a_known_length_fails_before_training():
    model, x, y, w = _model(algorithms.SAM(start=0.5))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(data, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(model.inner.trainable_variables[0]), w[0])


def _aesam_flags(norms, decay, c):
    """AE-SAM's decisions from the squared gradient norms, by the paper's recursions."""
    mean = variance = None
    flags = []
    for step, norm in enumerate(norms):
        s = norm ** 2
        if mean is None:
            mean, variance = s, 0.0
        else:
            mean = decay * mean + (1 - decay) * s
            variance = decay * variance + (1 - decay) * (s - mean) ** 2
        flags.append(float(s >= mean + c(step) * np.sqrt(variance)))
    return flags


@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (-1.0, 1.0), None])
def test_aesam_perturbs_when_the_squared_gradient_norm_is_large_for_the_run(thresholds):
    rho, decay, steps = 0.3, 0.5, 6
    start, end = (1.0, -1.0) if thresholds is None else thresholds
    kwargs = {} if thresholds is None else {"threshold_start": start, "threshold_end": end}
    model, x, y, w = _model(algorithms.AESAM(rho=rho, ema_decay=decay, **kwargs))
    ref = NumpyMLP(l2=L2)
    mean = variance = None
    flags = []
    for step in range(steps):
        g, h = _sam_gradient(ref, w, x, y, rho)
        s = flat_norm(g) ** 2
        if mean is None:
            mean, variance = s, 0.0
        else:
            mean = decay * mean + (1 - decay) * s
            variance = decay * variance + (1 - decay) * (s - mean) ** 2
        c = start + (end - start) * step / steps
        take = s >= mean + c * np.sqrt(variance)
        flags.append(float(take))
        w = _sgd(w, h if take else g)
    assert 0 < sum(flags) < steps  # Both branches are exercised.
    actual, history = _train(model, x, y, steps)
    assert history["perturbed"] == flags
    _assert_close(actual, w)


def test_aesam_uses_sam_more_often_late_in_training_by_default():
    # The paper: c_t = (t/T) lambda_1 + (1 - t/T) lambda_2, lambda_1 = -1,
    # lambda_2 = 1: the threshold falls, so SAM steps become more frequent.
    decay, steps = 0.9, 60
    x, y = regression_data(n=256)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=0).batch(16).repeat()
    model = keras_flat.FlatMinimaModel(mlp(), algorithms.AESAM(rho=0.05, ema_decay=decay), seed=SEED)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    # One step per epoch, so the logs are per step.
    history = model.fit(data, epochs=steps, steps_per_epoch=1, verbose=0).history
    expected = _aesam_flags(history["grad_norm"], decay, lambda t: 1.0 - 2.0 * t / steps)
    assert history["perturbed"] == expected
    early, late = np.mean(expected[:steps // 3]), np.mean(expected[-steps // 3:])
    assert late > early + 0.2, (early, late)


class _CoinSchedule(algorithms.when.Always):
    STREAMS = {"coin": 5}


def test_streams_of_one_rule_must_differ():
    with pytest.raises(ValueError, match="Random stream 5 is drawn by both"):
        algorithms.Composite(where=algorithms.where.FilterGaussian(0.1),
                             how=algorithms.how.Replace(), when=_CoinSchedule())


def test_pieces_compose_into_a_new_rule_that_trains_and_round_trips():
    rule = algorithms.Composite(where=algorithms.where.Ascent(0.2),
                                how=algorithms.how.SurrogateGap(0.3),
                                when=algorithms.when.Every(2))
    rebuilt = algorithms.get(algorithms.serialize(rule))
    assert rebuilt == rule and rebuilt is not rule
    model, x, y, w = _model(rule)
    ref = NumpyMLP(l2=L2)
    for step in range(3):
        g, h = _sam_gradient(ref, w, x, y, 0.2)
        w = _sgd(w, [a - 0.3 * b for a, b in zip(h, np_project_out(g, h))] if step % 2 == 0
                 else g)
    _assert_close(_train(model, x, y, 3)[0], w)
    assert abs(flat_dot(np_project_out(g, h), h)) < 1e-9 * flat_norm(g) * flat_norm(h)
