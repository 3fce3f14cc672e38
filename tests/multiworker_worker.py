"""One worker of the MultiWorkerMirroredStrategy test (run as a subprocess).

Usage: python multiworker_worker.py TF_CONFIG_JSON OUTPUT_DIR
Trains a short `fit` with every algorithm and saves the final weights.
"""

import os
import sys

os.environ["TF_CONFIG"] = sys.argv[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_flat  # noqa: E402

from helpers import mlp  # noqa: E402
from helpers import regression_data  # noqa: E402

ALGORITHMS = {
    "none": lambda: None,
    "rs": lambda: keras_flat.algorithms.RandomSmoothing(rho=0.3),
    "sa": lambda: keras_flat.algorithms.SharpnessAware(rho=0.2, examples=2),
    "sam": lambda: keras_flat.algorithms.SAM(rho=0.1),
    "asam": lambda: keras_flat.algorithms.ASAM(rho=0.3),
    "rs_replica": lambda: keras_flat.algorithms.RandomSmoothing(rho=0.3, perturbation_sync="replica"),
}


def main():
    index = json.loads(sys.argv[1])["task"]["index"]
    out = sys.argv[2]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = regression_data(n=64)
    results = {"replicas": strategy.num_replicas_in_sync}
    for name, factory in ALGORITHMS.items():
        with strategy.scope():
            model = keras_flat.FlatMinimaModel(mlp(), factory(), seed=3)
            model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results[name] = {"loss": [float(v) for v in history.history["loss"]]}
        np.savez(os.path.join(out, f"{name}_{index}.npz"),
                 *[np.array(v) for v in model.trainable_variables])
    with open(os.path.join(out, f"results_{index}.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
