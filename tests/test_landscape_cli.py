"""`keras-flat landscape` and `keras-flat demo --landscape`."""

import csv
import os

import numpy as np
import pytest

from keras_flat import cli

from helpers import mlp
from helpers import regression_data


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def saved(tmp_path):
    x, y = regression_data(n=40)
    model = mlp()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    data = str(tmp_path / "data.npz")
    np.savez(data, x=x, y=y)
    return path, data, model, x, y


def test_landscape_writes_plots_and_values_at_the_models_loss(saved, tmp_path, capsys):
    path, data, model, x, y = saved
    out = str(tmp_path / "out")
    assert cli.main(["landscape", path, "--data", data, "--out", out, "--resolution", "5",
                     "--resolution-1d", "7", "--directions", "eigen"]) == 0
    printed = capsys.readouterr().out
    for name in ("landscape_1d.png", "landscape_2d.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    line = _rows(os.path.join(out, "landscape_1d.csv"))
    plane = _rows(os.path.join(out, "landscape_2d.csv"))
    assert len(line) == 7 and len(plane) == 25
    expected = model.evaluate(x, y, batch_size=40, verbose=0)
    centre = [r for r in plane if float(r["alpha"]) == 0.0 and float(r["beta"]) == 0.0]
    assert float(centre[0]["loss"]) == pytest.approx(expected, rel=1e-6)
    assert "Top Hessian eigenvalues" in printed and "landscape_2d.csv" in printed


def test_landscape_errors_name_the_argument_and_value(saved, tmp_path, capsys):
    path, data, model, x, y = saved

    def error(*argv):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["landscape", *argv])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "argument MODEL" in error("missing.keras", "--data", data) and "missing.keras" in \
        error("missing.keras", "--data", data)
    text = error(path, "--data", data, "--x-key", "inputs")
    assert "--x-key" in text and "'inputs'" in text and "['x', 'y']" in text
    assert "argument --data" in error(path, "--data", str(tmp_path / "none.npz"))
    assert "--resolution" in error(path, "--data", data, "--resolution", "1")
    assert "--directions" in error(path, "--data", data, "--directions", "pca")
    assert "--loss" in error(path, "--data", data, "--loss", "no_such_loss")
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, x=np.zeros((4, 3)), y=np.zeros((4, 2)))
    text = error(path, "--data", bad)
    assert "argument --data" in text and "(4, 3)" in text
    uncompiled = str(tmp_path / "uncompiled.keras")
    mlp().save(uncompiled)
    assert "--loss" in error(uncompiled, "--data", data)
    # --loss compiles a model saved without one.
    assert cli.main(["landscape", uncompiled, "--data", data, "--loss", "mse", "--out",
                     str(tmp_path / "u"), "--resolution", "2", "--resolution-1d", "2"]) == 0
