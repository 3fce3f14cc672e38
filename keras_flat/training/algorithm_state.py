"""The variables an algorithm keeps between steps, saved with the model."""

import keras


class AlgorithmState(keras.layers.Layer):
    """Holds a `FlatMinimaModel`'s algorithm state and the planned length of `fit`.

    A layer of the model, so its variables are created in the model's
    distribution scope, saved and restored with the model, and excluded
    from the trainable variables. `planned_steps` is written at the start of
    each `fit` (epochs × steps per epoch, 0 when unknown); the algorithm's
    own variables are created by `Algorithm.build` through `make_variable`.
    """

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.planned_steps = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="planned_steps")
        self.seeds = StepSeeds(self.add_weight(
            shape=(2,), dtype="int64", initializer=keras.initializers.Constant([seed, 0]),
            trainable=False, aggregation="none", name="seed_state"))
        self._state_names = []
        self.built = True

    def make_variable(self, name, shape, dtype="float32"):
        """A new zero-initialised, non-trainable state variable.

        Its aggregation is `"mean"`: written in a replica context, the
        replicas' values are averaged (they are identical in `"global"`
        mode).
        """
        variable = self.add_weight(shape=tuple(shape), dtype=dtype, initializer="zeros",
                                   trainable=False, aggregation="mean", name=name)
        # Held as an attribute too, so `reset` can drop it the way Keras drops
        # a deleted attribute's variable (no longer saved or listed).
        name = f"_state_{len(self._state_names)}"
        setattr(self, name, variable)
        self._state_names.append(name)
        return variable

    def reset(self):
        """Drops every variable `make_variable` created (before a rebuild)."""
        for name in self._state_names:
            delattr(self, name)
        self._state_names = []

    def call(self, inputs):
        return inputs


class StepSeeds:
    """One stateless seed per training step, from a counter saved with the model.

    Gives the numbers of `keras.random.SeedGenerator(seed).next()` (`[seed,
    k]` at the k-th call), but keeps its state in a variable of the model,
    which `keras.models.load_model` restores (a `SeedGenerator` attribute's
    state is not restored by Keras 3.15, so a resumed run would repeat its
    noise).

    Attributes:
        state: The int64 variable `[seed, calls so far]`.
    """

    def __init__(self, state):
        self.state = state

    def next(self):
        """This call's seed, an int64 tensor of shape `(2,)`; advances the state."""
        value = self.state.value * 1  # A copy, not a read of the variable.
        self.state.assign(value + keras.ops.convert_to_tensor([0, 1], dtype="int64"))
        return value
