"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.distributed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiworker_worker.py")
TIMEOUT = 420


def _free_ports(count):
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_every_algorithm_to_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    procs = []
    try:
        for index in range(2):
            config = json.dumps({"cluster": {"worker": workers},
                                 "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, config, str(tmp_path)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    results = [json.load(open(os.path.join(tmp_path, f"results_{i}.json"))) for i in range(2)]
    assert results[0]["replicas"] == 2
    for name in ("none", "rs", "sa", "sam", "asam", "rs_replica"):
        weights = [np.load(os.path.join(tmp_path, f"{name}_{i}.npz")) for i in range(2)]
        for key in weights[0].files:
            np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=name)
        assert results[0][name]["loss"][-1] < results[0][name]["loss"][0], name
