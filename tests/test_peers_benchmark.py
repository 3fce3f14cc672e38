"""benchmarks/peers.py: its missing-peer messages and its PyTorch SAM step.

No timing is asserted: the numbers of a shared test machine mean nothing.
"""

import importlib
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `benchmarks` is not an installed package.
    sys.path.insert(0, ROOT)

from benchmarks import peers  # noqa: E402


def test_missing_peers_are_skipped_with_the_package_and_the_install_command(
        monkeypatch, capsys):
    real = importlib.import_module

    def without_peers(name, *args, **kwargs):
        if name.split(".")[0] in ("tf_keras", "torch", "pyhessian"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(peers.importlib, "import_module", without_peers)
    assert peers.load_peers() == {"tf_keras": None, "torch": None, "pyhessian": None}
    assert peers.optional("pyhessian", "the PyHessian rows") is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, package in zip(lines, ("tf_keras", "torch", "pyhessian")):
        assert line.startswith("Skipping ")
        assert f"the package `{package}` is not installed" in line
        assert line.endswith('Install the peers with: pip install -e ".[peers]"')


def test_an_installed_peer_is_returned_without_a_message(capsys):
    assert peers.optional("json", "nothing") is importlib.import_module("json")
    assert capsys.readouterr().out == ""


def _numpy_sam_steps(w, b, x, y, rho, lr, momentum, steps):
    """SAM with SGD and momentum on `x @ w.T + b`, MSE loss, assembled by hand."""

    def gradients(w, b):
        residual = x @ w.T + b - y
        scale = 2.0 / residual.size  # d/dr of mean(r**2)
        return scale * residual.T @ x, scale * residual.sum(axis=0)

    buffers, losses = None, []
    for _ in range(steps):
        losses.append(np.mean((x @ w.T + b - y) ** 2))
        gw, gb = gradients(w, b)
        norm = np.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2))
        ew, eb = rho * gw / norm, rho * gb / norm
        sw, sb = gradients(w + ew, b + eb)  # The gradient at the perturbed point.
        buffers = (sw, sb) if buffers is None else (momentum * buffers[0] + sw,
                                                    momentum * buffers[1] + sb)
        w, b = w - lr * buffers[0], b - lr * buffers[1]
    return w, b, losses


def test_torch_sam_step_matches_a_numpy_sam_step_on_a_linear_model():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    rho, lr, momentum, steps = 0.3, 0.1, 0.9, 3

    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    losses = [float(peers.torch_sam_step(model, torch.nn.MSELoss(), optimizer, tx, ty, rho=rho))
              for _ in range(steps)]

    ew, eb, expected_losses = _numpy_sam_steps(w, b, x, y, rho, lr, momentum, steps)
    np.testing.assert_allclose(model.weight.detach().numpy(), ew, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), eb, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    # The perturbation matters here: plain SGD with momentum lands elsewhere.
    pw, _, _ = _numpy_sam_steps(w, b, x, y, 0.0, lr, momentum, steps)
    assert np.max(np.abs(pw - ew)) > 1e-3


def test_torch_models_have_the_keras_models_parameter_counts():
    torch = pytest.importorskip("torch")
    from benchmarks import common

    for kind in ("mlp-wide", "cnn", "cnn-nobn"):
        keras_count = peers.count(common.MODELS[kind]().trainable_variables)
        torch_count = peers.count(list(peers.torch_model(kind, torch).parameters()))
        assert torch_count == keras_count, kind
