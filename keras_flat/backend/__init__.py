"""The seam between the package and the Keras backend it runs on.

What keras-flat needs that `keras.ops` does not give is reached through
this module, which forwards to the implementation of the active Keras
backend: a conditional whose branches evaluate gradients (`branch`),
ordering a buffer's release (`after`), dense gradients (`densify`), the
graph being built (`current_graph`), the loss and gradients at given
weights writing nothing (`keras_flat.backend.tensorflow.evaluation`: one
primitive for the training step, the Hessian and the landscape), and the
non-finite guard of a training
step (`forward_state`, `StepGuard`, `nonfinite_anywhere`, `apply_unless`,
`poison`: skipping an update on every replica at once, which on TensorFlow
means `tf.cond` and `merge_call`). Only TensorFlow has an implementation
today (`keras_flat/backend/tensorflow/`). The update rules (`algorithms/`)
are written against this interface and `keras.ops`; the training step's
gradient tapes and reductions and the Hessian measurements still use
TensorFlow directly.
"""

import keras

SUPPORTED = ("tensorflow",)

if keras.backend.backend() not in SUPPORTED:
    raise ImportError(
        f"keras-flat runs on the Keras backends {SUPPORTED}; the active backend is "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_flat.backend.tensorflow import ON_NONFINITE  # noqa: E402
from keras_flat.backend.tensorflow import StepGuard  # noqa: E402
from keras_flat.backend.tensorflow import after  # noqa: E402
from keras_flat.backend.tensorflow import apply_unless  # noqa: E402
from keras_flat.backend.tensorflow import branch  # noqa: E402
from keras_flat.backend.tensorflow import current_graph  # noqa: E402
from keras_flat.backend.tensorflow import densify  # noqa: E402
from keras_flat.backend.tensorflow import forward_state  # noqa: E402
from keras_flat.backend.tensorflow import nonfinite_anywhere  # noqa: E402
from keras_flat.backend.tensorflow import poison  # noqa: E402

__all__ = ["SUPPORTED", "ON_NONFINITE", "StepGuard", "after", "apply_unless", "branch",
           "current_graph", "densify", "forward_state", "nonfinite_anywhere", "poison"]
