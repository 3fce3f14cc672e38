"""The base classes of the pieces algorithms are composed of."""

import keras

from keras_flat.algorithms import arguments


class Piece:
    """One part of an update rule: when it perturbs, where, or how it combines.

    Pieces hold only their (validated) arguments. State they keep between
    steps is created by `init` and handed back to them at every step, and
    they change it only by returning new values (see `Step.assignments`), so
    the same piece can be used by several algorithms and traced many times.

    Attributes:
        STREAMS: The random streams the piece draws from, as
            `{name: number}`. The number is folded into the step's seed, so
            each stream is independent of every other one; numbers must be
            unique within an algorithm (`Composite` checks).
        RENAMED: Deprecated arguments, `{old: new_name}` or `{old:
            function(old_value) -> {new_name: value}}`: accepted with a
            `DeprecationWarning`, and read silently from saved configs
            (see `keras_flat.algorithms.arguments.translate`).
    """

    STREAMS = {}
    RENAMED = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = arguments.checked_init(cls.__dict__["__init__"])

    def init(self, build):
        """Creates this piece's state; returns `{name: variable}` (default: none).

        Args:
            build: A `BuildContext`.
        """
        return {}

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**arguments.translate(cls, config, warn=False))

    def label_parts(self):
        """What a table label shows of this piece's arguments, e.g. `["ρ=0.05"]`."""
        return []

    def variant_options(self):
        """Options that depart from the published rule, e.g. `["antithetic"]`.

        A rule's label then names them instead of the rule's citation.
        """
        return []

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))


class Schedule(Piece):
    """Decides whether a step perturbs (default: every step)."""

    #: Whether `due` needs the planned number of steps of the current `fit`.
    needs_plan = False

    def due(self, ctx, state):
        """`None` for "always", else a scalar bool tensor, equal on every replica."""
        return None

    def expected_fraction(self):
        """The fraction of steps expected to perturb (for cost estimates)."""
        return 1.0

    def assignments(self, ctx, state):
        """`(variable, value)` pairs that update this schedule's state."""
        return ()


class Perturbation(Piece):
    """Evaluates the batch gradient at a perturbed point.

    Attributes:
        keeps_gradient: Whether `finish` reads the perturbed gradient. If
            so, `Composite` carries `h` out of the schedule's conditional
            (zeros on a step that does not perturb) and hands it to
            `finish`, which runs on every replica and may use collectives.
    """

    keeps_gradient = False

    def prepare(self, ctx, state):
        """Work that runs on every step, outside the conditional (default: none)."""
        return None

    def gradient(self, ctx, prepared, state):
        """The gradient `h` at the perturbed point (a list of tensors)."""
        raise NotImplementedError(f"{type(self).__name__} must implement gradient().")

    def gradient_evaluations(self, batch_size):
        """Batch-gradient evaluations `gradient` costs, in batch-sized units."""
        return 1.0

    def assignments(self, ctx, state):
        """`(variable, value)` pairs updating this piece's state, every step."""
        return ()

    def finish(self, ctx, h, took, state):
        """`(variable, value)` pairs from the perturbed gradient (if `keeps_gradient`).

        Args:
            ctx: The `StepContext`.
            h: The perturbed gradient (this replica's contribution; zeros
                on a step that did not perturb).
            took: Scalar bool tensor, whether the step perturbed, or None
                (every step does).
            state: This piece's state.
        """
        return ()


class Combiner(Piece):
    """Turns the gradients of a step into the update (default: the clean gradient).

    `perturbed` and `plain` run inside the schedule's conditional and must
    not use collectives; `finish` runs after it on every replica and may.
    """

    def perturbed(self, ctx, h, state):
        """`(update, carry)` of a perturbed step; `h` is the perturbed gradient."""
        raise NotImplementedError(f"{type(self).__name__} must implement perturbed().")

    def plain(self, ctx, state):
        """`(update, carry)` of a plain step; `carry` must match `perturbed`'s."""
        return list(ctx.grads), []

    def finish(self, ctx, update, carry, took, state):
        """`(update, assignments)` after the conditional.

        Args:
            ctx: The `StepContext`.
            update: The branch's update.
            carry: The branch's carry.
            took: Scalar bool tensor, whether the step perturbed, or None
                (every step does).
            state: This combiner's state.
        """
        return update, ()


class PerVariable(dict):
    """State with one entry per trainable variable, keyed by its position.

    Built by `BuildContext.per_variable` for the variables of the build; at
    each step `Composite` hands the piece the entries of the variables that
    step updates, keyed by their position among them (a variable the loss
    does not reach has no gradient and is left out of a step).
    """

    def __init__(self, entries, variables):
        super().__init__(entries)
        self._index = {id(v): i for i, v in enumerate(variables)}

    def select(self, variables):
        """The entries of `variables`, keyed by their position in that list.

        Raises:
            RuntimeError: if a variable was not among those of the build.
        """
        try:
            positions = [self._index[id(v)] for v in variables]
        except KeyError:
            raise RuntimeError(
                "The trainable variables changed after the algorithm's state was "
                "built. Call `compile()` again after changing `trainable`, as Keras "
                "requires, and the state is rebuilt for the new variables."
            ) from None
        return PerVariable({j: self[i] for j, i in enumerate(positions)}, variables)


class BuildContext:
    """What a piece may use to create its state, once, before training.

    Attributes:
        variables: The trainable variables the optimizer updates.
        parameters: Their `keras_flat.utils.structure.Parameter`s, in order.
    """

    def __init__(self, variables, parameters, make_variable, prefix=""):
        self.variables = list(variables)
        self.parameters = list(parameters)
        self._make_variable = make_variable
        self._prefix = prefix

    def make_variable(self, name, shape, dtype="float32"):
        """A new zero-initialised, non-trainable variable saved with the model."""
        return self._make_variable(self._prefix + name, shape, dtype)

    def per_variable(self, make):
        """State with one entry per trainable variable: a `PerVariable`.

        Args:
            make: `make(i, variable, parameter)` returns the entry of the
                `i`-th variable (e.g. `self.make_variable(...)`).
        """
        return PerVariable({i: make(i, v, p) for i, (v, p) in
                            enumerate(zip(self.variables, self.parameters))}, self.variables)

    def prefixed(self, prefix):
        """The same context, naming variables with an extra prefix."""
        return BuildContext(self.variables, self.parameters, self._make_variable,
                            self._prefix + prefix)


def serialize(piece):
    return keras.saving.serialize_keras_object(piece)


def deserialize(config, kind):
    """Rebuilds a piece from its config, checking it is a `kind`."""
    piece = keras.saving.deserialize_keras_object(config)
    if not isinstance(piece, kind):
        raise ValueError(
            f"Expected a {kind.__name__} config. Received: {config!r}."
        )
    return piece
