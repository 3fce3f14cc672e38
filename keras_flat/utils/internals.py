"""Every private Keras hook the package relies on, checked before use.

Keras 3 has no public way to do the few things below. Each one is reached
only through this module, which checks at first use that the hook still
exists and raises a `RuntimeError` naming the installed Keras version
otherwise, instead of silently doing something else.
"""

import inspect

import keras


class MissingKerasHook(RuntimeError):
    """A private Keras hook keras-flat needs is missing in this Keras version."""


def _missing(what, why):
    return MissingKerasHook(
        f"keras-flat needs {what}, which Keras {keras.__version__} does not have ({why}). "
        "Install a Keras version keras-flat supports (see its README)."
    )


def flatten_layers(model):
    """Every layer of `model`, nested ones included (`Layer._flatten_layers`).

    Keras's public `Model.layers` lists only the top level, and layers such
    as `MultiHeadAttention` keep their sub-layers out of it.
    """
    method = getattr(model, "_flatten_layers", None)
    if not callable(method):
        raise _missing("Layer._flatten_layers()",
                       "used to find BatchNormalization layers and to tell biases from kernels")
    return list(method(include_self=True, recursive=True))


def loss_tracker(model):
    """The `Mean` metric Keras reports as `loss` (`Trainer._loss_tracker`).

    In Keras 3 `compute_loss` does not update it; Keras's own `train_step`
    does so by hand, and a custom `train_step` must do the same for `fit` to
    log the loss.
    """
    tracker = getattr(model, "_loss_tracker", None)
    if not isinstance(tracker, keras.metrics.Mean):
        raise _missing("Model._loss_tracker (a keras.metrics.Mean of the compiled loss)",
                       "used to log the training loss from a custom train_step")
    return tracker


def check_symbolic_build_hook():
    """Checks that `Model._maybe_symbolic_build(iterator, data_batch)` exists.

    `FlatMinimaModel` overrides it to build a model under a multi-worker
    strategy from one replica's batch (Keras 3.15 averages the distributed
    batch, which fails with several workers). If Keras renamed the hook, the
    override would silently stop running; this raises instead.
    """
    method = getattr(keras.Model, "_maybe_symbolic_build", None)
    if not callable(method):
        raise _missing("Model._maybe_symbolic_build()",
                       "overridden to build a model under MultiWorkerMirroredStrategy")
    parameters = inspect.signature(method).parameters
    if not {"iterator", "data_batch"} <= set(parameters):
        raise _missing("Model._maybe_symbolic_build(iterator=..., data_batch=...)",
                       f"its parameters are {list(parameters)}")


def share_compiled_loss(source, target):
    """Makes `target.compute_loss` use the loss compiled on `source`.

    `keras.Model.compute_loss` reads the compiled loss from
    `Trainer._compile_loss`. A wrapped model that overrides `compute_loss`
    and calls the base method (Keras's recommended pattern) needs the
    wrapper's compiled loss there, since only the wrapper is compiled.
    """
    if not (hasattr(source, "_compile_loss") and hasattr(target, "_compile_loss")):
        raise _missing("Trainer._compile_loss (the loss compile() builds)",
                       "read by Model.compute_loss of a wrapped model that overrides it")
    target._compile_loss = source._compile_loss
