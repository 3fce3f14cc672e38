"""Walking the layers nested inside a Keras model."""

import keras


def layers_of(model):
    """Every layer inside `model`, nested ones included, and `model` itself.

    Keras 3 has no public API that walks nested layers (`Model.layers` lists
    one level, and only for models); `Layer._flatten_layers` is the one Keras
    itself uses. Its absence fails loudly rather than missing layers.
    """
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        raise RuntimeError(
            "keras_flat walks nested layers with keras.Layer._flatten_layers, which "
            f"Keras {keras.__version__} does not have. Please report this with your "
            "Keras version."
        )
    return list(flatten(include_self=True, recursive=True))
