"""The named rules, each a recipe of pieces; importing a module registers its rules."""

from keras_flat.algorithms.rules import aesam  # noqa: F401
from keras_flat.algorithms.rules import ahn  # noqa: F401
from keras_flat.algorithms.rules import gsam  # noqa: F401
from keras_flat.algorithms.rules import looksam  # noqa: F401
from keras_flat.algorithms.rules import none  # noqa: F401  (registration order)
from keras_flat.algorithms.rules import rwp  # noqa: F401
from keras_flat.algorithms.rules import sam  # noqa: F401
