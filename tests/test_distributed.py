"""MirroredStrategy over two logical CPUs (configured in conftest.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat import hessian
from keras_flat.algorithms.pieces.where import SphereSample

from conftest import NUM_LOGICAL_CPUS
from helpers import flat_norm
from helpers import make_oracle
from helpers import mirrored_strategy
from helpers import mlp
from helpers import regression_data

pytestmark = pytest.mark.distributed

DEVICES = [f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)]


_strategy = mirrored_strategy


ALGORITHMS = {
    "none": lambda sync: algorithms.NoPerturbation(perturbation_sync=sync),
    "rs": lambda sync: algorithms.RandomSmoothing(rho=0.3, perturbation_sync=sync),
    "sa": lambda sync: algorithms.SharpnessAware(rho=0.2, examples=1, perturbation_sync=sync,
                                                 center=True, antithetic=True),
    "sa3": lambda sync: algorithms.SharpnessAware(rho=0.2, examples=3, perturbation_sync=sync,
                                                  center=True, antithetic=True),
    "sa_paper": lambda sync: algorithms.SharpnessAware(rho=0.2, perturbation_sync=sync),
    "sam": lambda sync: algorithms.SAM(rho=0.1, perturbation_sync=sync),
    "asam": lambda sync: algorithms.ASAM(rho=0.3, perturbation_sync=sync),
    "sam_every2": lambda sync: algorithms.SAM(rho=0.1, perturbation_sync=sync, interval=2),
}


def _train(name, sync, strategy=None, epochs=3, tolerance=None, x=None, y=None):
    if x is None:
        x, y = regression_data(n=64)
    with (strategy or tf.distribute.get_strategy()).scope():
        algorithm = ALGORITHMS[name](sync)
        if tolerance is not None:
            algorithm = type(algorithm)(**{**algorithm.arguments, "tolerance": tolerance},
                                        perturbation_sync=sync)
        model = keras_flat.FlatMinimaModel(mlp(), algorithm, seed=5)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return [np.array(v) for v in model.trainable_variables], history.history


# tests/test_invariants.py checks this for every registered rule in the default suite;
# here SA (with and without its options) runs by default, the other rules in the slow suite.
@pytest.mark.parametrize("name", [
    pytest.param("sa", marks=pytest.mark.compat), "sa_paper",
    *(pytest.param(n, marks=pytest.mark.slow) for n in ("none", "rs", "sam", "asam", "sam_every2"))])
def test_global_sync_equals_single_device_training_on_the_global_batch(name):
    single, single_logs = _train(name, "global")
    mirrored, mirrored_logs = _train(name, "global", _strategy())
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Logged norms are of the all-reduced gradient, not scaled by replicas.
    np.testing.assert_allclose(mirrored_logs["grad_norm"], single_logs["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(mirrored_logs["loss"], single_logs["loss"], rtol=1e-5)
    assert flat_norm([a - b for a, b in zip(single, _train("none", "global")[0])]) > 0 or \
        name == "none"


def test_sa_global_with_a_regularizer_equals_single_device():
    # Only the replica holding the example may contribute its loss, or every
    # replica would add its share of the regularization to the direction.
    x, y = regression_data(n=64)
    results = []
    for strategy in (None, _strategy()):
        with (strategy or tf.distribute.get_strategy()).scope():
            model = keras_flat.FlatMinimaModel(
                mlp(regularizer=keras.regularizers.L2(0.05)), ALGORITHMS["sa"]("global"), seed=5)
            model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append([np.array(v) for v in model.trainable_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_tolerance_takes_the_same_branch_on_every_replica():
    x, y = regression_data(n=64)
    _, probe = _train("none", "global", epochs=1)
    tolerance = float(np.median(probe["grad_norm"]))
    single, single_logs = _train("rs", "global", tolerance=tolerance)
    mirrored, mirrored_logs = _train("rs", "global", _strategy(), tolerance=tolerance)
    assert 0.0 < single_logs["perturbed"][0] < 1.0 or 0.0 < single_logs["perturbed"][-1] < 1.0
    np.testing.assert_allclose(mirrored_logs["perturbed"], single_logs["perturbed"])
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _replica_seeds(sync):
    strategy = _strategy()
    with strategy.scope():
        model = keras_flat.FlatMinimaModel(mlp(), "rs", seed=0)
        model.compile(optimizer="sgd", loss="mse")

    @tf.function
    def run():
        def fn():
            oracle = make_oracle(model, tf.zeros((2, 4)), tf.zeros((2, 2)), None,
                                 seed=tf.constant([3, 4], tf.int64))
            return oracle.seed(SphereSample.STREAMS["sphere"], sync)
        return strategy.experimental_local_results(strategy.run(fn))

    return [np.array(s) for s in run()]


def test_replica_mode_draws_different_noise_and_global_mode_the_same():
    replica = _replica_seeds("replica")
    assert len(replica) == NUM_LOGICAL_CPUS
    assert not np.array_equal(replica[0], replica[1])
    shared = _replica_seeds("global")
    np.testing.assert_array_equal(shared[0], shared[1])


def test_sa_with_several_examples_draws_them_from_one_replica():
    """With examples > 1 the first example is uniform over the global batch and
    the others come from the same replica's slice, so the run is a valid SA
    run (it trains) but not the single-device draw."""
    x, y = regression_data(n=128)
    single, _ = _train("sa3", "global", x=x, y=y, epochs=6)
    mirrored, logs = _train("sa3", "global", _strategy(), x=x, y=y, epochs=6)
    assert logs["loss"][-1] < 0.5 * logs["loss"][0]
    assert flat_norm([a - b for a, b in zip(single, mirrored)]) > 1e-5


@pytest.mark.parametrize("name", ["rs", "sa", "sam"])
def test_replica_mode_trains_and_differs_from_global_mode(name):
    x, y = regression_data(n=128)
    mirrored_global, _ = _train(name, "global", _strategy(), epochs=6, x=x, y=y)
    mirrored_replica, logs = _train(name, "replica", _strategy(), epochs=6, x=x, y=y)
    assert logs["loss"][-1] < 0.5 * logs["loss"][0]
    assert flat_norm([a - b for a, b in zip(mirrored_global, mirrored_replica)]) > 1e-4


def test_nonfinite_batch_on_one_replica_is_skipped_on_all():
    x, y = regression_data(n=32)
    x = x.copy()
    x[24] = np.nan  # Lands on replica 1 of the second batch.
    strategy = _strategy()
    with strategy.scope():
        model = keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.1, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    before = [np.array(v) for v in model.trainable_variables + model.optimizer.variables]
    history = model.fit(x[16:], y[16:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    after = [np.array(v) for v in model.trainable_variables + model.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_hessian_trace_callback_is_the_same_under_a_strategy():
    x, y = regression_data(n=64)
    values = []
    for strategy in (None, _strategy()):
        scope = (strategy or tf.distribute.get_strategy()).scope
        with scope():
            model = keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.1, seed=0)
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        trace = keras_flat.callbacks.HessianTrace((x, y), num_probes=8, batch_size=32)
        top = keras_flat.callbacks.TopEigenvalue((x, y), batch_size=32, rtol=1e-5)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                            callbacks=[trace, top])
        values.append((history.history["hessian_trace"], history.history["top_eigenvalue"]))
        # And inside the scope, as a user measuring after training would.
        with scope():
            direct = hessian.hessian_trace(model, (x, y), num_probes=8, batch_size=32)
        np.testing.assert_allclose(direct.value, history.history["hessian_trace"][-1], rtol=1e-5)
    np.testing.assert_allclose(values[0][0], values[1][0], rtol=1e-5)
    np.testing.assert_allclose(values[0][1], values[1][1], rtol=1e-4)


def test_skipped_step_leaves_adam_slots_iterations_and_batchnorm_statistics_unchanged():
    # The skip is a conditional around the optimizer's apply (merge_call into
    # cross-replica context): no copy of any weight or slot is restored.
    x, y = regression_data(n=32)
    x = x.copy()
    x[28] = np.nan  # Lands on replica 1 of the second batch.
    strategy = _strategy()
    with strategy.scope():
        model = keras_flat.FlatMinimaModel(mlp(batchnorm=True), "rs", rho=0.1, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)

    def state():
        values = []
        for v in model.weights + model.optimizer.variables:
            values += [np.array(r) for r in strategy.experimental_local_results(v.value)]
        return values

    before = state()
    history = model.fit(x[16:], y[16:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    for a, b in zip(before, state()):
        np.testing.assert_array_equal(a, b)
    assert int(np.array(model.optimizer.iterations)) == 1
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert int(np.array(model.optimizer.iterations)) == 2
