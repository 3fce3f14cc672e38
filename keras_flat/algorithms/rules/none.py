"""Plain training, the reference every perturbing rule is measured against."""

import keras
from keras import ops

from keras_flat.algorithms import registry
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.base import Step
from keras_flat.utils import vector


@keras.saving.register_keras_serializable(package="keras_flat")
class NoPerturbation(Algorithm):
    """Plain training: the optimizer applies the clean gradient unchanged.

    `FlatMinimaModel(model, algorithm=None)` uses it, so plain training runs
    through the same `train_step` (and logs the same `grad_norm`) as the
    perturbing rules, which makes comparisons like for like.

    Args:
        perturbation_sync: Only decides what `grad_norm` means under a
            strategy with several replicas. `"replica"` (default): the mean
            over replicas of each replica's batch-gradient norm, with no
            communication beyond Keras's own. `"global"`: the norm of the
            all-reduced gradient, at the cost of one extra all-reduce.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, algorithm=None)  # doctest: +SKIP
    """

    perturbs = False

    def __init__(self, perturbation_sync="replica"):
        super().__init__(perturbation_sync=perturbation_sync)

    def compute_update(self, oracle, grads):
        view = oracle.global_view(list(grads), self.perturbation_sync)
        return Step(list(grads), vector.norm(view), ops.convert_to_tensor(0.0))


registry.register("none", NoPerturbation, "plain SGD", aliases=("plain", "no_perturbation"))
