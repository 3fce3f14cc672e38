"""The seam between the package and the Keras backend it runs on.

Everything keras-flat needs that `keras.ops` does not give (a conditional
whose branches may hold gradient evaluations, dense gradients, the current
graph, and the distribution and automatic-differentiation primitives the
training step and the Hessian measurements use) is reached through this
module, which forwards to the implementation of the active Keras backend.
Only TensorFlow has one today (`keras_flat/backend/tensorflow/`); the rest
of the package is written against this interface and `keras.ops`.
"""

import keras

SUPPORTED = ("tensorflow",)

if keras.backend.backend() not in SUPPORTED:
    raise ImportError(
        f"keras-flat runs on the Keras backends {SUPPORTED}; the active backend is "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_flat.backend.tensorflow import after  # noqa: E402
from keras_flat.backend.tensorflow import branch  # noqa: E402
from keras_flat.backend.tensorflow import current_graph  # noqa: E402
from keras_flat.backend.tensorflow import densify  # noqa: E402

__all__ = ["SUPPORTED", "after", "branch", "current_graph", "densify"]
