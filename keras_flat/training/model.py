"""`FlatMinimaModel`: trains any Keras model toward flat minima with `fit()`."""

import inspect
import random

import keras
import numpy as np
import tensorflow as tf

from keras_flat import algorithms as algorithms_module
from keras_flat import backend
from keras_flat.algorithms.base import Step
from keras_flat.algorithms.oracle import GradientOracle
from keras_flat.algorithms.pieces.base import BuildContext
from keras_flat.backend.tensorflow.evaluation import BatchEvaluation
from keras_flat.backend.tensorflow.evaluation import LossScale
from keras_flat.backend.tensorflow.evaluation import batch_mean
from keras_flat.training.algorithm_state import AlgorithmState
from keras_flat.training.step_statistics import StepStatistics
from keras_flat.utils import internals
from keras_flat.utils import structure
from keras_flat.utils.batch_statistics import batchnorm_layers
from keras_flat.utils.validation import check_choice
from keras_flat.utils.validation import check_number

# Keyword arguments of keras.Model itself; everything else configures the
# algorithm.
_MODEL_KWARGS = ("name", "trainable", "dtype")
# Keys train_step logs that mean nothing for evaluate().
TRAIN_ONLY_LOGS = ("grad_norm", "perturbed", "skipped_steps")


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
    3. calls `optimizer.apply` once with the gradient the algorithm
       returns, unless the step's loss or update is not finite (see
       `on_nonfinite`; the decision is the same on every replica). Clipping,
       weight decay, EMA, gradient accumulation and loss scaling of the
       optimizer act on that gradient.

    Only trainable variables take part: a frozen layer (`trainable=False`,
    e.g. a pretrained backbone under a new head) is never perturbed or
    written, and every norm, inner product, projection and random sample of
    the algorithms is taken over the trainable variables alone. A frozen
    BatchNormalization runs in inference mode, as in Keras. When the
    trainable set changes (unfreeze or freeze, then `compile` again, as
    Keras requires), the algorithm's state sized by it is created afresh at
    the next `fit`.

    The inner model's `compute_loss`, if it overrides it, is the loss of
    every pass (the loss compiled on the wrapper is what its
    `super().compute_loss` reads). An inner model that overrides
    `train_step` is refused: this class replaces the training step. Random
    layers (augmentation, Dropout, GaussianNoise) draw in the perturbed
    passes what they drew in the clean pass.

    For serving, `export()` writes the inner model (see
    `keras.Model.export`); `.inner` is the trained Keras model. A saved
    `FlatMinimaModel` loads after `import keras_flat`, which registers it.

    The step needs first derivatives only, and those are exact through every
    Keras layer (the `stop_gradient` inside TensorFlow's moments, which
    spoils second derivatives through normalization layers, leaves first
    derivatives unchanged; `keras_flat.hessian` handles the second ones).

    Randomness comes from a per-step seed, `[seed, step count]`, whose
    counter is a variable of the model: the same `seed` gives the same run,
    and a saved and reloaded model continues the same sequence.

    Besides the loss and compiled metrics, each step logs `grad_norm` (the
    whole-model norm of the clean gradient) and `perturbed` (1 if the step
    took the perturbed branch, else 0); Keras averages both over the epoch,
    so `perturbed` is the fraction of perturbed steps. `skipped_steps`
    counts the steps of the epoch skipped for a non-finite update.

    Args:
        model: The `keras.Model` to train (Sequential, functional or
            subclassed, any inputs and outputs).
        algorithm: The update rule: a `keras_flat.algorithms.Algorithm`, a
            registered name (see `keras_flat.algorithms.get`), a config dict
            (an algorithm's `get_config()`), `None` for plain training, or
            `"default"` (the default): `keras_flat.algorithms.default()`,
            SAM on the steps whose squared gradient norm is at least its
            running mean (AE-SAM's trigger at a constant threshold), for
            training from scratch. To escape a sharp minimum reached
            already, use `"sa"`. The registered names:

            {registered_rules}

        seed: Integer >= 0 seeding the perturbations, or `None` for a random
            seed (recorded in the config).
        on_nonfinite: What a step whose loss or update is NaN or Inf does.
            `"skip"` (default): the update is not applied, weights, optimizer
            state and BatchNorm statistics are left as they were, and the
            step is counted in `logs["skipped_steps"]`. `"raise"`: the same,
            then `fit` raises `FloatingPointError`. `"ignore"`: no check
            (plain Keras behaviour, slightly faster). With mixed_float16,
            the `LossScaleOptimizer` skips such steps itself (and lowers its
            loss scale); `"skip"` makes that decision agree on all replicas.
        **kwargs: Arguments of the algorithm when `algorithm` is a name
            (e.g. `rho=0.1, tolerance=1e-3`), plus `name` and `trainable`
            of the model.

    Example:

    ```python
    inner = keras.Sequential([keras.Input((20,)), keras.layers.Dense(10)])
    model = keras_flat.FlatMinimaModel(inner, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, epochs=3)
    history.history["grad_norm"], history.history["perturbed"]
    model.save("flat.keras")
    ```
    """

    def __init__(self, model, algorithm="default", *, seed=None, on_nonfinite="skip",
                 **kwargs):
        model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
        on_nonfinite = check_choice("on_nonfinite", on_nonfinite, backend.ON_NONFINITE)
        _check_inner(model)
        algorithm = algorithms_module.get(algorithm, **kwargs)
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        seed = check_number("seed", seed, minimum=0, integer=True)
        super().__init__(**model_kwargs)
        self.inner = model
        self.algorithm = algorithm
        self.seed = seed
        self.on_nonfinite = on_nonfinite
        self.step_statistics = StepStatistics(skipped=on_nonfinite != "ignore")
        self.algorithm_state = AlgorithmState(seed=seed, name="algorithm_state")
        self.seed_generator = self.algorithm_state.seeds
        # The trainable variables the algorithm's state was built for (ids),
        # and their descriptions, by id.
        self._algorithm_built_for = None
        self._parameters = {}
        if model.built:
            self.built = True
        self._build_algorithm()

    def _build_algorithm(self):
        """Creates the algorithm's state for the current trainable variables.

        The one entry to the algorithm's build, run at the three moments its
        variables can be made: at construction (for a built model, so that
        saved weights load into them), whenever a new training function is
        made (after `compile`, the trainable set may have changed: a backbone
        frozen or unfrozen for fine-tuning; under a strategy Keras has built
        the model by then), and in the training step (without a strategy
        Keras builds an unbuilt model in its first trace). It does nothing
        before the inner model is built or when the state is already built
        for the current trainable set; state sized by the trainable variables
        (LookSAM's stored direction, ARWP's per-filter sums) is created afresh
        when the set has changed.
        """
        if not self.inner.built:
            return
        variables = list(self.inner.trainable_variables)
        signature = tuple(id(v) for v in variables)
        if signature == self._algorithm_built_for:
            return
        if self._algorithm_built_for is not None:
            if tf.inside_function():
                raise RuntimeError(
                    "The trainable variables changed since the training function was "
                    "made. Call `compile()` again after changing `trainable`, as Keras "
                    "requires; the algorithm's state is then rebuilt."
                )
            self.algorithm_state.reset()
        self._parameters = structure.parameters_by_id(self.inner)
        build = BuildContext(variables, [self._parameters[id(v)] for v in variables],
                             self.algorithm_state.make_variable)
        if tf.inside_function():  # In the first trace, which created the model's variables.
            self.algorithm.build(build)
        else:
            with self.distribute_strategy.scope():
                self.algorithm.build(build)
        self._algorithm_built_for = signature

    def make_train_function(self, force=False):
        if self.train_function is None or force:  # It will be traced anew.
            self._build_algorithm()
        return super().make_train_function(force=force)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training loss: the inner model's `compute_loss` if it overrides it.

        Otherwise Keras's: the compiled loss plus regularization losses.
        """
        if not _overrides(self.inner, "compute_loss"):
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                        training=training)
        # When the inner model's compute_loss calls Model.compute_loss, that
        # reads the compiled loss: the one compiled here.
        internals.share_compiled_loss(self, self.inner)
        kwargs = {}
        if "training" in inspect.signature(self.inner.compute_loss).parameters:
            kwargs["training"] = training
        return self.inner.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                       **kwargs)

    def export(self, filepath, *args, **kwargs):
        """Exports the inner model for serving (see `keras.Model.export`).

        The artifact serves the inner model's inference function, which is
        what `predict` runs; nothing of the training rule is in it.
        """
        return self.inner.export(filepath, *args, **kwargs)

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        clean = self._clean_pass(x, y, sample_weight)
        if clean.variables:
            oracle = self._oracle(clean, x, y, sample_weight)
            step = _checked_step(self.algorithm, self.algorithm.compute_update(oracle, clean.grads))
            self._apply(clean, step)
        logs = self.compute_metrics(x, y, clean.y_pred, sample_weight=sample_weight)
        return _reducible_across_workers(logs)

    def _clean_pass(self, x, y, sample_weight):
        """Step 1: the forward pass (the only one that writes state) and its gradient."""
        clean = _CleanPass(scale=LossScale(self.optimizer))
        if not self.inner.built:  # Only in the first trace, which builds the model.
            with keras.StatelessScope():
                self.inner(x, training=True)
        self._build_algorithm()
        # The forward pass writes BatchNorm statistics and the seeds of random
        # layers (Dropout, augmentation); the step's own seed counter advances
        # too. Their values before it are what a skipped step restores, and
        # what the perturbed passes see, so random layers draw there exactly
        # what they drew in the clean pass.
        forward = backend.forward_state(self.inner)
        clean.guard = backend.StepGuard(forward + [self.seed_generator.state])
        clean.saved = clean.guard.snapshot()
        variables = self.trainable_variables
        clean.evaluation = BatchEvaluation(self, variables, zip(forward, clean.saved),
                                           clean.scale)
        values = [tf.convert_to_tensor(v) for v in variables]
        clean.loss, grads, clean.y_pred, written = clean.evaluation(
            values, x, y, sample_weight)
        for variable, value in zip(forward, written):
            variable.assign(value)
        internals.loss_tracker(self).update_state(
            batch_mean(clean.loss), sample_weight=_batch_size(x))
        connected = [i for i, g in enumerate(grads) if g is not None]
        clean.variables = [variables[i] for i in connected]
        clean.grads = [grads[i] for i in connected]
        if self.on_nonfinite == "ignore":
            clean.guard = None
        return clean

    def _oracle(self, clean, x, y, sample_weight):
        """Step 2's access to the batch: gradients at other weights, writing nothing."""
        seed = None
        if self.algorithm.perturbs:
            # Perturbations start once the clean gradient is complete: the
            # graph would otherwise run them alongside the clean pass, and
            # the memory of both passes would be alive at once.
            with tf.control_dependencies(clean.grads):
                seed = tf.identity(self.seed_generator.next())
        return GradientOracle(
            clean.evaluation, x, y, sample_weight, clean.variables, seed=seed,
            step=self.optimizer.iterations,
            planned_steps=self.algorithm_state.planned_steps,
            optimizer=self.optimizer,
            parameters=[self._parameters[id(v)] for v in clean.variables],
            masked_subsets=bool(batchnorm_layers(self.inner, include_frozen=False)),
        )

    def _apply(self, clean, step):
        """Step 3: one `optimizer.apply`, unless the step is not finite anywhere.

        The update enters at true scale and is scaled for the optimizer here,
        once (see `LossScale`).
        """
        bad, skipped = None, None
        if clean.guard is not None:
            bad = backend.nonfinite_anywhere(step.update, clean.loss)
        update, variables = clean.scale.for_optimizer(step.update), clean.variables
        if bad is None:
            self.optimizer.apply(update, variables)
        elif isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # It skips non-finite steps itself; make its decision global.
            self.optimizer.apply(backend.poison(update, bad), variables)
        else:
            if not self.optimizer.built:  # Not inside the conditional.
                self.optimizer.build(self.trainable_variables)
            backend.apply_unless(bad, self.optimizer, update, variables)
        if bad is not None:
            clean.guard.restore_if(bad, clean.saved)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            skipped = tf.cast(bad, tf.float32) / replicas
        for variable, value in step.assignments:  # The algorithm's own state.
            value = tf.cast(value, variable.dtype)
            if bad is not None:
                value = tf.where(bad, tf.convert_to_tensor(variable), value)
            variable.assign(value)
        self.step_statistics.update_state(step.grad_norm, step.perturbed, skipped)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 averages a distributed first batch with
        # `strategy.reduce("MEAN", batch, axis=None)` to build the model, which
        # fails under MultiWorkerMirroredStrategy with several workers. Only
        # shapes matter here, so build from the first local replica's batch.
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is not None and iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            *args, **kwargs):
        # `keras.Model.fit` with the callbacks the rule needs: Keras 3 gives a
        # model no other way to add callbacks to `fit`, and only they learn
        # the number of steps `fit` plans (`_PlanRecorder`).
        if _num_workers(self.distribute_strategy) > 1:
            internals.check_symbolic_build_hook()
        extra = [_PlanRecorder()]
        if self.on_nonfinite == "raise":
            extra.append(RaiseOnNonFinite())
        return super().fit(x, y, batch_size, epochs, verbose, _with(callbacks, extra),
                           *args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        logs = super().train_on_batch(*args, **{**kwargs, "return_dict": True})
        if self.on_nonfinite == "raise":
            check = RaiseOnNonFinite()
            check.set_model(self)
            check.on_train_batch_end(0, logs)
        if kwargs.get("return_dict", False):
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def test_step(self, data):
        logs = super().test_step(data)
        logs = {k: v for k, v in logs.items() if k not in TRAIN_ONLY_LOGS}
        return _reducible_across_workers(logs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "model": keras.saving.serialize_keras_object(self.inner),
            "algorithm": algorithms_module.serialize(self.algorithm),
            "seed": self.seed,
            "on_nonfinite": self.on_nonfinite,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        algorithm = algorithms_module.get(
            config.pop("algorithm", None), custom_objects=custom_objects
        )
        return cls(model, algorithm, **config)


FlatMinimaModel.__doc__ = algorithms_module.registry.fill_docstring(FlatMinimaModel.__doc__)


class RaiseOnNonFinite(keras.callbacks.Callback):
    """Raises as soon as a step was skipped for a non-finite update.

    Added to `fit` by `FlatMinimaModel(..., on_nonfinite="raise")`. The step
    itself was skipped in graph (the weights are intact), then this raises.
    With a `LossScaleOptimizer`, overflowing scaled gradients are routine
    (the optimizer lowers its loss scale and skips the step), so only a
    non-finite loss raises.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        optimizer = getattr(self.model, "optimizer", None) if self.model else None
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            loss = logs.get("loss", 0.0)
            failed = loss is not None and not np.isfinite(loss)
        else:
            skipped = logs.get("skipped_steps", 0.0)
            failed = bool(skipped and skipped > 0)
        if failed:
            raise FloatingPointError(
                f"Training step {batch} produced a non-finite loss or update; it was "
                "skipped and the weights are unchanged. FlatMinimaModel(on_nonfinite="
                "'skip') skips such steps and counts them in logs['skipped_steps'] instead."
            )


class _PlanRecorder(keras.callbacks.Callback):
    """Writes the number of steps `fit` plans into the model's algorithm state.

    Schedules that depend on the fraction of training done (a float
    `start`, AE-SAM's threshold) read it; an algorithm that needs it fails
    here, before any step, when `fit` cannot know it.
    """

    def on_train_begin(self, logs=None):
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        planned = int(steps) * int(epochs) if steps and epochs else 0
        algorithm = self.model.algorithm
        if not planned and getattr(algorithm, "needs_plan", False):
            raise ValueError(
                f"{algorithm!r} perturbs from a fraction of training on, which needs the "
                "number of steps fit() plans, but the data has no known length. Pass "
                "`steps_per_epoch` to fit(), or give `start` as an integer step."
            )
        self.model.algorithm_state.planned_steps.assign(planned)


def _checked_step(algorithm, step):
    """`step`, if `algorithm.compute_update` returned a `Step`; else a `TypeError`."""
    if not isinstance(step, Step):
        raise TypeError(
            f"{type(algorithm).__name__}.compute_update must return a "
            f"keras_flat.algorithms.Step. Received: {step!r} of type {type(step).__name__}."
        )
    return step


def _overrides(model, method):
    """Whether `model`'s class overrides `keras.Model`'s `method`."""
    return getattr(type(model), method) is not getattr(keras.Model, method)


def _check_inner(model):
    """Raises a clear error for a model `FlatMinimaModel` cannot wrap faithfully."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Sequential, "
            f"functional or subclassed). Received: model={model!r} of "
            f"type {type(model).__name__}."
        )
    if isinstance(model, FlatMinimaModel):
        raise ValueError(
            "Argument `model` is already a FlatMinimaModel (with algorithm "
            f"{model.algorithm!r}); wrapping it again would ignore its rule. Wrap "
            "its inner model instead: FlatMinimaModel(model.inner, ...)."
        )
    if _overrides(model, "train_step"):
        raise ValueError(
            f"Argument `model` ({type(model).__name__}) overrides `train_step`, which "
            "FlatMinimaModel replaces with its own (a clean pass, the rule's perturbed "
            "passes, one optimizer update), so yours would never run. Move the loss "
            "into `compute_loss` (FlatMinimaModel calls the inner model's "
            "`compute_loss` in every pass) and the rest into layers or callbacks."
        )


def _with(callbacks, extra):
    callbacks = list(callbacks or [])
    for callback in extra:
        if not any(type(c) is type(callback) for c in callbacks):
            callbacks.append(callback)
    return callbacks


def _reducible_across_workers(logs):
    """Gives scalar logs a length-1 axis under multi-worker collectives.

    Keras 3.15 reduces step logs across several workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars; with a
    leading axis of one the same call averages the replicas' values into a
    scalar. Elsewhere the logs are returned unchanged.
    """
    if _num_workers(tf.distribute.get_strategy()) < 2:
        return logs
    return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}


def _num_workers(strategy):
    """How many worker processes a strategy spans (1 unless multi-worker)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, [])) for job in ("chief", "worker")))


def _batch_size(x):
    return tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]


class _CleanPass:
    """What the clean pass of one training step leaves for the other two steps."""

    def __init__(self, scale):
        self.scale = scale  # The step's `LossScale`.
        self.guard = None  # A `backend.StepGuard` of the forward-pass state, if protected.
        self.saved = None  # Its snapshot, the state before the forward pass.
        self.evaluation = None  # The step's `BatchEvaluation`, shared with the oracle.
        self.y_pred = None
        self.loss = None
        self.variables = []  # The trainable variables the loss depends on.
        self.grads = []
