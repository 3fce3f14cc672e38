"""`FlatMinimaModel`: trains any Keras model toward flat minima with `fit()`."""

import random

import keras
import tensorflow as tf

from keras_flat import algorithms as algorithms_module
from keras_flat.algorithms.base import check_number
from keras_flat.oracle import GradientOracle
from keras_flat.oracle import loss_scale
from keras_flat.oracle import rescale_gradients
from keras_flat.oracle import unscale_gradients

# Keyword arguments of keras.Model itself; everything else configures the
# algorithm.
_MODEL_KWARGS = ("name", "trainable", "dtype")
_SEED_KEY = "seed_generator_state"
# Keys train_step logs that mean nothing for evaluate().
TRAIN_ONLY_LOGS = ("grad_norm", "perturbed")


@keras.saving.register_keras_serializable(package="keras_flat")
class FlatMinimaModel(keras.Model):
    """Wraps a Keras model so that `fit()` trains it toward flat minima.

    `FlatMinimaModel` overrides `train_step` and leaves everything else to
    the wrapped model: `call` delegates to it (reachable as `.inner`), so
    `compile`, `fit`, `evaluate`, `predict`, `save` and callbacks work as on
    any Keras model, with `jit_compile=True` or `False`.

    Each training step:

    1. runs the clean forward pass (`training=True`), which alone updates
       BatchNorm statistics, the loss tracker and the compiled metrics; its
       loss includes regularization losses;
    2. hands the clean gradient to the algorithm, which may evaluate
       gradients of the same batch at perturbed weights through a
       side-effect-free oracle (no variable is written; the perturbed pass's
       BatchNorm updates are discarded);
    3. calls `optimizer.apply` exactly once, unconditionally, with the
       gradient the algorithm returns. Clipping, weight decay, EMA, gradient
       accumulation and loss scaling of the optimizer act on that gradient.

    Randomness comes from a `keras.random.SeedGenerator` owned by the model:
    the same `seed` gives the same run, and the generator state is saved
    with the model.

    Besides the loss and compiled metrics, each step logs `grad_norm` (the
    whole-model norm of the clean gradient) and `perturbed` (1 if the step
    took the perturbed branch, else 0); Keras averages both over the epoch,
    so `perturbed` is the fraction of perturbed steps.

    Args:
        model: The `keras.Model` to train (Sequential, functional or
            subclassed, any inputs and outputs).
        algorithm: The update rule: a `keras_flat.algorithms.Algorithm`, a
            name (`"rs"`, `"sa"`, `"sam"`, `"asam"`, `"none"`; see
            `keras_flat.algorithms.get`), a config dict, or `None` for plain
            training. Defaults to `"rs"` (Algorithm 1 of Ahn, Jadbabaie &
            Sra, arXiv 2305.15659).
        seed: Integer >= 0 seeding the perturbations, or `None` for a random
            seed (recorded in the config).
        **kwargs: Arguments of the algorithm when `algorithm` is a name
            (e.g. `rho=0.1, tolerance=1e-3`), plus `name` and `trainable`
            of the model.

    Example:

    ```python
    inner = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10)])
    model = keras_flat.FlatMinimaModel(inner, "sa", rho=0.05, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, epochs=3)
    history.history["grad_norm"], history.history["perturbed"]
    model.save("flat.keras")
    ```
    """

    def __init__(self, model, algorithm="rs", *, seed=None, **kwargs):
        model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Argument `model` must be a keras.Model (Sequential, "
                f"functional or subclassed). Received: model={model!r} of "
                f"type {type(model).__name__}."
            )
        algorithm = algorithms_module.get(algorithm, **kwargs)
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        seed = check_number("seed", seed, minimum=0, integer=True)
        super().__init__(**model_kwargs)
        self.inner = model
        self.algorithm = algorithm
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(
            seed, name="perturbation_seed"
        )
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")
        self.perturbed_tracker = keras.metrics.Mean(name="perturbed")
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = loss_scale(self.optimizer)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            scaled_loss = loss if scale is None else loss * tf.cast(scale, loss.dtype)
        self._loss_tracker.update_state(
            _unscale_for_distribution(loss), sample_weight=_batch_size(x)
        )
        # Read after the forward pass: an unbuilt model creates them there.
        variables = self.trainable_variables
        if variables:
            grads = tape.gradient(scaled_loss, variables)
            connected = [i for i, g in enumerate(grads) if g is not None]
            variables = [variables[i] for i in connected]
            grads = unscale_gradients([grads[i] for i in connected], scale)
            oracle = GradientOracle(
                self, x, y, sample_weight, variables,
                seed=self.seed_generator.next(), scale=scale,
            )
            update, grad_norm, perturbed = self.algorithm.compute_update(
                oracle, grads
            )
            self.optimizer.apply(rescale_gradients(update, scale), variables)
            self.grad_norm_tracker.update_state(grad_norm)
            self.perturbed_tracker.update_state(perturbed)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k not in TRAIN_ONLY_LOGS}

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[_SEED_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        if _SEED_KEY in keys:
            self.seed_generator.state.assign(store[_SEED_KEY])
        own = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.inner),
            "algorithm": algorithms_module.serialize(self.algorithm),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        algorithm = algorithms_module.get(
            config.pop("algorithm", None), custom_objects=custom_objects
        )
        return cls(model, algorithm, **config)


def _batch_size(x):
    return tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]


def _unscale_for_distribution(loss):
    # compute_loss divides by the number of replicas; the tracker reports the
    # per-batch mean, as Keras's own train_step does.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(replicas, loss.dtype)
    return loss
