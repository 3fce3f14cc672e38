"""The TensorFlow side of `keras_flat.backend`."""

from keras_flat.backend.tensorflow.control import after
from keras_flat.backend.tensorflow.control import branch
from keras_flat.backend.tensorflow.control import current_graph
from keras_flat.backend.tensorflow.control import densify

__all__ = ["after", "branch", "current_graph", "densify"]
