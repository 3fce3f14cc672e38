"""What a "filter" is for each kind of Keras parameter (Li et al., 2018).

Filter normalisation rescales each filter of a random direction to the
norm of the matching filter of the weights, so that directions are
comparable across layers and across networks whose weights differ in scale.
The rules (one output unit per filter, read from the layer that owns each
variable) are `keras_flat.structure`'s, shared with the update rules that
treat filters or offsets specially (RWP, ASAM). Biases and normalisation
parameters are left out of random directions by default (their direction
is zero), as in Li et al.
"""

from keras_flat.batch_statistics import batchnorm_layers
from keras_flat.structure import KINDS  # noqa: F401
from keras_flat.structure import Parameter  # noqa: F401
from keras_flat.structure import describe_parameters  # noqa: F401


def batchnorm_variances(model):
    """The `moving_variance` variables of the BatchNormalization layers of `model`."""
    return [layer.moving_variance for layer in batchnorm_layers(model, include_frozen=True)
            if getattr(layer, "moving_variance", None) is not None]
