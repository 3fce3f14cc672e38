"""Validation problems of docs/algorithms.md section 10, whose flattest minima are known.

V1: f(a, b) = (ab - 1)^2 as a Keras model (two bias-free Dense(1) layers on a
constant input, MSE loss, no factor ½): tr ∇²f = 2(a² + b²), the flattest
minimum is a = b = 1 with trace 4, and the imbalance B = a² - b² is conserved
by gradient flow. To leading order in ηρ², per step of size η:

    RS: E[B_{t+1}] = (1 - 2ηρ²) B_t        (D = 2 parameters)
    SA: E[B_{t+1}] = (1 - 4ηρ²) B_t        (D times RS)

V2: matrix factorisation, one example per entry of M (a subclassed model on
dict inputs): p(i, j) = <U_i, V_j>, MSE over the m*n entries, so
f = (2/(mn)) · ½‖UVᵀ - M‖² and the flattest trace is
(2/(mn)) · 2√(mn)‖M‖_* = 4‖M‖_*/√(mn), attained at a balanced factorisation.
"""

import keras
import numpy as np
import pytest

import keras_flat

from helpers import train_v1

ETA, RHO, STEPS = 0.02, 0.3, 300


def _log_decay_rate(algorithm, seeds, **kwargs):
    b0 = 2.0**2 - 0.5**2
    rates = []
    for seed in seeds:
        a, b = train_v1(algorithm, STEPS, ETA, seed, rho=RHO, **kwargs)
        rates.append(np.log((a * a - b * b) / b0) / STEPS)
        assert abs(a * b - 1.0) < 1e-2  # Still a minimum.
    return float(np.mean(rates))


@pytest.mark.compat
def test_v1_plain_sgd_conserves_the_imbalance():
    a0, b0 = 2.0, 0.55  # Off the minima curve: plain SGD has work to do.
    a, b = train_v1(None, STEPS, ETA, seed=0, a=a0, b=b0)
    assert abs(a * b - 1.0) < 1e-4  # Converged to a minimum...
    np.testing.assert_allclose(a * a - b * b, a0 * a0 - b0 * b0, rtol=1e-3)  # ...same B.
    assert 2 * (a * a + b * b) > 8.0  # Far from the flattest trace 4.


@pytest.mark.compat
def test_v1_random_smoothing_decays_at_the_predicted_rate():
    measured = _log_decay_rate("rs", seeds=range(4))
    predicted = np.log(1 - 2 * ETA * RHO**2)
    assert measured == pytest.approx(predicted, rel=0.25)


@pytest.mark.compat
def test_v1_sharpness_aware_decays_at_the_predicted_rate():
    measured = _log_decay_rate("sa", seeds=range(2))
    predicted = np.log(1 - 4 * ETA * RHO**2)
    assert measured == pytest.approx(predicted, rel=0.25)


def limit_trace(a, b):
    """tr ∇²f at Φ(a, b), the minimum gradient flow reaches from (a, b).

    Gradient flow keeps B = a² - b² and ends on ab = 1, where
    a² + b² = √(B² + 4); flatness progress is measured by tr(Φ(x)).
    """
    return 2 * np.sqrt((a * a - b * b) ** 2 + 4)


@pytest.mark.compat
def test_v1_sharpness_aware_reaches_the_flattest_minimum():
    for seed in range(2):
        a, b = train_v1("sa", 900, 0.05, seed=seed, rho=0.3)  # 600 leave one stream short.
        assert limit_trace(a, b) == pytest.approx(4.0, rel=0.01)
        assert 2 * (a * a + b * b) == pytest.approx(4.0, rel=0.1)
        assert abs(a * b - 1.0) < 0.05  # Near the minima: SA's normal kicks are O(ηρ).


class Factorization(keras.Model):
    """p(i, j) = <U_i, V_j> from dict inputs {"row": i, "col": j}."""

    def __init__(self, u, v, **kwargs):
        super().__init__(**kwargs)
        self.u = keras.layers.Embedding(
            u.shape[0], u.shape[1], embeddings_initializer=keras.initializers.Constant(u))
        self.v = keras.layers.Embedding(
            v.shape[0], v.shape[1], embeddings_initializer=keras.initializers.Constant(v))

    def call(self, inputs):
        return keras.ops.sum(self.u(inputs["row"]) * self.v(inputs["col"]), axis=-1)


def _factorisation_problem(m=4, n=3, r=2):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(m, r)) @ rng.normal(size=(r, n))
    p, s, qt = np.linalg.svd(target)
    u, v = p[:, :r] * np.sqrt(s[:r]), qt[:r].T * np.sqrt(s[:r])
    rows, cols = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    x = {"row": rows.reshape(-1), "col": cols.reshape(-1)}
    flattest = 4 * s[:r].sum() / np.sqrt(m * n)
    return target, u, v, x, flattest


def _train(model, algorithm, x, y, steps, **kwargs):
    wrapped = keras_flat.FlatMinimaModel(model, algorithm, seed=0, **kwargs)
    wrapped.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", steps_per_execution=100)
    xs = {k: np.tile(v, steps) for k, v in x.items()}
    history = wrapped.fit(xs, np.tile(y, steps), batch_size=len(y), epochs=1,
                          shuffle=False, verbose=0)
    return history.history


def _trace_and_imbalance(model, m, n):
    u = np.array(model.u.embeddings, np.float64)
    v = np.array(model.v.embeddings, np.float64)
    trace = 2 / (m * n) * (m * np.sum(v**2) + n * np.sum(u**2))
    return trace, np.linalg.norm(n * u.T @ u - m * v.T @ v), u @ v.T


def test_v2_sharpness_aware_finds_the_balanced_factorisation():
    target, u, v, x, flattest = _factorisation_problem()
    y = target.reshape(-1).astype("float32")
    model = Factorization(2 * u, v / 2)  # An exact but unbalanced minimum.
    model(x)
    trace0, imbalance0, _ = _trace_and_imbalance(model, 4, 3)
    assert trace0 > 1.8 * flattest
    _train(model, "sa", x, y, steps=4000, rho=0.1)
    # Plain steps finish the descent onto the minima (Theorem 2's final GD).
    _train(model, None, x, y, steps=2000)
    trace, imbalance, product = _trace_and_imbalance(model, 4, 3)
    assert trace == pytest.approx(flattest, rel=0.05)
    assert imbalance < 0.1 * imbalance0
    assert np.mean((product - target) ** 2) < 1e-8  # The loss is still ~0.


def test_v2_plain_sgd_does_not_move_along_the_minima():
    target, u, v, x, flattest = _factorisation_problem()
    y = target.reshape(-1).astype("float32")
    rng = np.random.default_rng(1)
    model = Factorization(2 * u + 0.05 * rng.normal(size=u.shape), v / 2)
    model(x)
    _, imbalance0, _ = _trace_and_imbalance(model, 4, 3)
    _train(model, None, x, y, steps=4000)
    trace, imbalance, product = _trace_and_imbalance(model, 4, 3)
    assert np.mean((product - target) ** 2) < 1e-7  # It reached a minimum...
    assert imbalance == pytest.approx(imbalance0, rel=0.01)  # ...with the same imbalance,
    assert trace > 1.8 * flattest  # far from the flattest.
