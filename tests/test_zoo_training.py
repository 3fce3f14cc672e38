"""Every registered rule on every zoo architecture, against steps assembled by hand.

For each rule of `keras_flat.algorithms.registry` (run with the arguments
of `tests/reference/arguments.py`) and each zoo model: one `fit` step
(Dropout off) equals the step assembled from gradients computed with
`tf.GradientTape` over `model.stateless_call` (in a `tf.function`) and
combined in NumPy by the
references of the rule's pieces (`tests/reference`), with the offsets and
examples the step used read back (`zoo.DrawRecorder`) and checked; and
`fit` with Dropout on trains to a lower, finite loss. Frozen weights stay
bit-identical throughout. A new rule is covered with no edit here; one
whose pieces have no reference fails, naming the piece.

The default suite runs each rule on two fast architectures and each of
them with at least one rule (a fixed rotation; the step eagerly); the slow
suite runs the whole cross product, and the compiled step of every pair.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat.algorithms import registry

import reference
import zoo

LR = 0.1
RULES = tuple(registry.names())
# MobileNetV3Small takes minutes per rule on two cores: slow suite only.
FAST = tuple(n for n in zoo.NAMES if not zoo.ZOO[n].slow)


def rotation(rule):
    """The fast architectures the default suite runs `rule` on.

    Rule i (in registration order) meets architectures i and i + n/2
    (mod n, of the n fast ones): every rule two, every architecture at least
    one while there are at least n/2 rules.
    """
    i = RULES.index(rule)
    return {FAST[i % len(FAST)], FAST[(i + len(FAST) // 2) % len(FAST)]}


def _cases():
    """Every (architecture, rule) pair; those outside the rotation in the slow suite."""
    return [pytest.param(name, rule, id=f"{name}-{rule}",
                         marks=() if name in rotation(rule) else (pytest.mark.slow,))
            for rule in RULES for name in zoo.NAMES]


CASES = _cases()


def build_rule(rule):
    """A fresh instance of registered rule `rule` with the zoo tests' arguments."""
    return keras_flat.algorithms.get(rule, **reference.ARGUMENTS.get(rule, {}))


def _take(structure, indices):
    if isinstance(structure, dict):
        return {k: v[indices] for k, v in structure.items()}
    return structure[indices]


def _examples_gradient(zoo_model, inner, x, y):
    """`sub_grad(values, indices)`: the gradient of the chosen examples' mean loss.

    With BatchNorm, the chosen examples keep their place in the whole batch,
    in training mode (normalised by the batch's statistics, through which the
    gradient flows), with zero weight on the others: their share of the batch
    loss. Without it they are gathered and evaluated alone.
    """
    whole = zoo.gradient_function(zoo_model.losses(), inner, x, y)
    size = len(tf.nest.flatten(x)[0])
    cache = {}

    def sub_grad(values, idx):
        if zoo_model.batchnorm:
            weights = np.zeros(size)
            weights[np.asarray(idx)] = size / len(idx)
            return whole(values, weights)[1]
        key = tuple(int(i) for i in idx)
        if key not in cache:
            cache[key] = zoo.gradient_function(
                zoo_model.losses(), inner, _take(x, idx), _take(y, idx))
        return cache[key](values)[1]
    return sub_grad


@pytest.mark.parametrize("name, rule", CASES)
def test_one_step_equals_the_step_assembled_by_hand(name, rule, monkeypatch):
    # Run eagerly: a compiled step costs a trace per model and rule. The
    # slow suite checks the compiled step against the same reference.
    check_one_step(name, rule, "eager", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name, rule", CASES)
def test_the_compiled_step_equals_the_step_assembled_by_hand(name, rule, monkeypatch):
    check_one_step(name, rule, "compiled", monkeypatch)


@pytest.mark.parametrize("name, rule", CASES)
def test_fit_with_dropout_trains(name, rule):
    check_training(name, rule)


def test_the_default_rotation_meets_every_rule_and_architecture():
    assert all(len(rotation(rule)) == 2 for rule in RULES)
    met = set().union(*(rotation(rule) for rule in RULES))
    assert met == set(FAST) or len(RULES) < len(FAST) // 2, set(FAST) - met


@pytest.mark.parametrize("rule", RULES)
def test_every_piece_of_every_registered_rule_has_a_reference(rule):
    reference.check_references(build_rule(rule))


def test_the_arguments_name_registered_rules():
    stale = set(reference.ARGUMENTS) - set(RULES)
    assert not stale, f"tests/reference/arguments.py names unregistered rules {stale}"


def test_a_piece_without_a_reference_fails_naming_it_and_where_to_add_it():
    from keras_flat.algorithms import Composite
    from keras_flat.algorithms import how
    from keras_flat.algorithms import when
    from keras_flat.algorithms.pieces import base as piece

    class Elsewhere(piece.Perturbation):
        def gradient(self, ctx, prepared, state):
            return list(ctx.grads)

    class Later(piece.Schedule):
        pass

    rule = Composite(where=Elsewhere(), how=how.Mix(0.3),
                     when=when.AllOf([when.Every(2), Later()]))
    with pytest.raises(reference.MissingReference) as raised:
        reference.check_references(rule)
    message = str(raised.value)
    assert "'Elsewhere'" in message and "tests/reference/where.py" in message, message
    assert "'Later'" in message and "tests/reference/when.py" in message, message
    assert "piece 'Mix'" not in message and "piece 'Every'" not in message, message


def check_one_step(name, rule, mode, monkeypatch):
    """One `fit` step (Dropout off) equals the step assembled by hand."""
    algorithm = build_rule(rule)
    reference.check_references(algorithm)  # Before the expensive part.
    zoo_model = zoo.ZOO[name]
    inner = zoo.build(name, dropout=0.0)
    x, y = zoo_model.data(12, seed=1)
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=mode == "eager",
                  **zoo_model.compile_args())
    variables = list(inner.trainable_variables)
    recorder = zoo.DrawRecorder(variables)
    w = zoo.weights_of(inner)
    frozen = _frozen_weights(inner)
    frozen_before = [np.array(v) for v in frozen]
    # Traced, as the step's own evaluation is: eager and traced kernels round
    # differently, which MobileNetV3 (BatchNorm over 1x1 maps of 12 examples)
    # amplifies to 0.3% of its gradient.
    grad = zoo.gradient_function(zoo_model.losses(), inner, x, y)
    sub_grad = _examples_gradient(zoo_model, inner, x, y)

    with monkeypatch.context() as patch:
        recorder.install(patch)
        history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False,
                            verbose=0).history

    point = reference.Point(
        g=grad(w)[1], w=w, variables=variables, model=inner,
        grad=lambda values: grad(values)[1], sub_grad=sub_grad,
        draws=reference.Draws(recorder.calls()), batch_size=len(x), step=0,
        planned_steps=1, learning_rate=LR)
    perturbed, update = reference.reference_step(algorithm, point)
    assert history["perturbed"] == [float(perturbed)], history
    expected = [a - LR * u for a, u in zip(w, update)]
    for got, want, v in zip(zoo.weights_of(inner), expected, variables):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=v.path)
    # Frozen variables (a trainable=False backbone) are never written.
    for before, v in zip(frozen_before, frozen):
        np.testing.assert_array_equal(np.array(v), before, err_msg=v.path)


def _frozen_weights(model):
    """Non-trainable weights no training step may change.

    That is every non-trainable variable except the moving statistics of a
    trainable BatchNormalization and the random state of Dropout layers.
    """
    return [v for v in model.variables if not v.trainable and not _batch_statistic(model, v)
            and "seed_generator" not in v.path]


def _batch_statistic(model, variable):
    """Whether `variable` is the moving statistic of a trainable BatchNormalization."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            if any(variable is s for s in (layer.moving_mean, layer.moving_variance)):
                return True
    return False


def _dropout_states(model):
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]
    return [np.array(layer.seed_generator.state) for layer in layers]


def check_training(name, rule):
    """`fit` with Dropout on reaches a lower, finite loss; frozen weights stay."""
    zoo_model = zoo.ZOO[name]
    inner = zoo.build(name, dropout=0.2)
    x, y = zoo_model.data(96, seed=2)
    model = keras_flat.FlatMinimaModel(inner, build_rule(rule), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02), **zoo_model.compile_args())
    before = _dropout_states(inner)
    assert before, "every zoo model has Dropout"
    frozen = _frozen_weights(inner)
    frozen_before = [np.array(v) for v in frozen]
    losses = model.fit(x, y, batch_size=16, epochs=5, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.95 * losses[0], losses
    # Dropout was active: its random state advanced during training.
    assert all(np.any(a != b) for a, b in zip(before, _dropout_states(inner)))
    for value, v in zip(frozen_before, frozen):  # A frozen backbone stays as it was.
        np.testing.assert_array_equal(np.array(v), value, err_msg=v.path)


def test_a_tolerance_that_always_perturbs_steps_like_no_tolerance_with_embeddings():
    zoo_model = zoo.ZOO["lstm_text"]
    x, y = zoo_model.data(16, seed=1)
    weights = []
    for tolerance in (None, 1e6):
        inner = zoo.build("lstm_text")
        algorithm = keras_flat.algorithms.RandomSmoothing(rho=0.05, tolerance=tolerance)
        model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LR), **zoo_model.compile_args())
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        weights.append(zoo.weights_of(inner))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("algorithm", [
    keras_flat.algorithms.SAM(rho=0.05, interval=2),
    keras_flat.algorithms.SharpnessAware(rho=0.05, interval=2),
    keras_flat.algorithms.LookSAM(rho=0.05, interval=2),
    keras_flat.algorithms.SAM(rho=0.05, start=1),
], ids=["sam-interval", "sa-interval", "looksam", "sam-start"])
def test_conditional_rules_train_a_model_with_an_embedding(algorithm):
    # The plain branch returns the clean gradient, an Embedding's being
    # tf.IndexedSlices; it once failed to pair with the dense perturbed branch.
    zoo_model = zoo.ZOO["lstm_text"]
    x, y = zoo_model.data(32, seed=1)
    inner = zoo.build("lstm_text")
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), **zoo_model.compile_args())
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert history["perturbed"][0] == 0.5, history
    assert all(np.all(np.isfinite(w)) for w in zoo.weights_of(inner))
