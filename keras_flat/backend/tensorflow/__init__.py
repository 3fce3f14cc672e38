"""The TensorFlow side of `keras_flat.backend`."""

from keras_flat.backend.tensorflow.control import after
from keras_flat.backend.tensorflow.control import branch
from keras_flat.backend.tensorflow.control import current_graph
from keras_flat.backend.tensorflow.control import densify
from keras_flat.backend.tensorflow.guard import ON_NONFINITE
from keras_flat.backend.tensorflow.guard import StepGuard
from keras_flat.backend.tensorflow.guard import apply_unless
from keras_flat.backend.tensorflow.guard import forward_state
from keras_flat.backend.tensorflow.guard import nonfinite_anywhere
from keras_flat.backend.tensorflow.guard import poison

__all__ = ["ON_NONFINITE", "StepGuard", "after", "apply_unless", "branch", "current_graph",
           "densify", "forward_state", "nonfinite_anywhere", "poison"]
