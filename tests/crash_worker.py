"""Training process for the crash-recovery test (run as a subprocess).

Usage: python crash_worker.py BACKUP_DIR OUTPUT.npz ALGORITHM [KILL_EPOCH KILL_BATCH]
Trains 4 epochs with keras.callbacks.BackupAndRestore; with KILL_* given, the
process SIGKILLs itself in the middle of that epoch.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402

from helpers import mlp  # noqa: E402
from helpers import regression_data  # noqa: E402


class KillMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    backup, output, algorithm = sys.argv[1:4]
    keras.utils.set_random_seed(0)
    x, y = regression_data(n=96)
    model = keras_flat.FlatMinimaModel(mlp(batchnorm=True), algorithm, rho=0.2, seed=11)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    callbacks = [keras.callbacks.BackupAndRestore(backup)]
    if len(sys.argv) > 4:
        callbacks.append(KillMidEpoch(int(sys.argv[4]), int(sys.argv[5])))
    model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    np.savez(output, *[np.array(v) for v in model.weights + model.optimizer.variables])


if __name__ == "__main__":
    main()
