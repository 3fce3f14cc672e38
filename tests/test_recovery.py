"""A training process killed mid-epoch resumes to the uninterrupted result."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_worker.py")
TIMEOUT = 300


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


@pytest.mark.parametrize("algorithm", ["sa", pytest.param("rs", marks=pytest.mark.slow)])
def test_sigkill_mid_epoch_then_backup_and_restore_matches_uninterrupted(tmp_path, algorithm):
    reference = os.path.join(tmp_path, "reference.npz")
    code, out = _run(os.path.join(tmp_path, "backup_reference"), reference, algorithm)
    assert code == 0, out[-3000:]

    backup = os.path.join(tmp_path, "backup")
    resumed = os.path.join(tmp_path, "resumed.npz")
    code, out = _run(backup, resumed, algorithm, 2, 3)  # Killed in epoch 3 of 4.
    assert code == -signal.SIGKILL, out[-3000:]
    assert not os.path.exists(resumed)
    assert os.listdir(backup)  # The epoch-2 backup is there.
    code, out = _run(backup, resumed, algorithm)  # Restarted: restores, finishes.
    assert code == 0, out[-3000:]

    expected, got = np.load(reference), np.load(resumed)
    assert expected.files == got.files
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)
