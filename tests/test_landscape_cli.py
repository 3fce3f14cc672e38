"""`keras-flat landscape` and `keras-flat demo --landscape`."""

import csv
import os

import keras
import numpy as np
import pytest

from keras_flat.app import cli

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
    assert cli.main(["landscape", path, "--data", data, "--output-dir", out, "--resolution", "5",
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
    assert cli.main(["landscape", uncompiled, "--data", data, "--loss", "mse", "--output-dir",
                     str(tmp_path / "u"), "--resolution", "2", "--resolution-1d", "2"]) == 0


@pytest.fixture
def two_inputs_two_outputs(tmp_path):
    """A functional model with inputs 'a', 'b' and outputs 'out1', 'out2', saved."""
    rng = np.random.default_rng(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], [keras.layers.Dense(2, name="out1")(hidden),
                                 keras.layers.Dense(1, name="out2")(hidden)])
    model.compile(optimizer="sgd", loss=["mse", "mse"])
    x = [rng.normal(size=(24, 3)).astype("float32"), rng.normal(size=(24, 2)).astype("float32")]
    y = [rng.normal(size=(24, 2)).astype("float32"), rng.normal(size=(24, 1)).astype("float32")]
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "two.keras")
    model.save(path)
    return path, model, x, y


def test_landscape_of_a_model_with_two_inputs_and_two_outputs(two_inputs_two_outputs, tmp_path):
    path, model, x, y = two_inputs_two_outputs
    files = {
        "names": ({"x_a": x[0], "x_b": x[1], "y_out1": y[0], "y_out2": y[1]}, []),
        "numbers": ({"x0": x[0], "x1": x[1], "y0": y[0], "y1": y[1]}, []),
        "keys": ({"first": x[0], "second": x[1], "t1": y[0], "t2": y[1]},
                 ["--x-key", "first", "--x-key", "second", "--y-key", "t1", "--y-key", "t2"]),
    }
    planes = []
    for name, (arrays, keys) in files.items():
        data, out = str(tmp_path / f"{name}.npz"), str(tmp_path / name)
        np.savez(data, **arrays)
        assert cli.main(["landscape", path, "--data", data, "--output-dir", out, "--resolution", "3",
                         "--resolution-1d", "3", *keys]) == 0
        planes.append(_rows(os.path.join(out, "landscape_2d.csv")))
    assert planes[0] == planes[1] == planes[2]
    expected = model.evaluate(x, y, batch_size=24, verbose=0)[0]  # The total loss.
    centre = [r for r in planes[0] if float(r["alpha"]) == 0.0 and float(r["beta"]) == 0.0]
    assert float(centre[0]["loss"]) == pytest.approx(expected, rel=1e-6)


def test_several_inputs_without_arrays_for_each_are_named_in_the_error(
        two_inputs_two_outputs, tmp_path, capsys):
    path, model, x, y = two_inputs_two_outputs
    data = str(tmp_path / "plain.npz")
    np.savez(data, x=x[0], y=y[0])

    def error(*argv):
        with pytest.raises(SystemExit):
            cli.main(["landscape", path, "--data", data, *argv])
        return capsys.readouterr().err

    text = error()
    assert ("argument --data: the model has 2 inputs ('a', 'b')" in text
            and "'x_a', 'x_b' or 'x0', 'x1'" in text and "['x', 'y']" in text)
    text = error("--x-key", "x")
    assert "argument --x-key: the model has 2 inputs ('a', 'b') but 1 --x-key was given" in text
    both = str(tmp_path / "inputs.npz")
    np.savez(both, x0=x[0], x1=x[1], y=y[0])
    with pytest.raises(SystemExit):
        cli.main(["landscape", path, "--data", both])
    assert "the model has 2 outputs ('out1', 'out2')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["landscape", "--help"])
    assert "'x_<input name>' or 'x0'," in " ".join(capsys.readouterr().out.split())
