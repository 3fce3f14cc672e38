"""The `keras-flat demo` main job and the offline datasets."""

import json
import os

import numpy as np
import pytest

from keras_flat.app import cli
from keras_flat.app import datasets


def test_digits_loads_offline_with_a_stratified_split():
    data = datasets.load("digits", seed=0)
    assert data.x_train.shape == (1347, 64) and data.x_test.shape == (450, 64)
    assert data.num_classes == 10 and data.input_shape == (64,)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # ~25% of each class.
    images = datasets.load("digits", image_shape=True, limit=100)
    assert images.x_train.shape == (100, 8, 8, 1)
    with pytest.raises(ValueError, match=r"`test_fraction`.*1.5"):
        datasets.load("digits", test_fraction=1.5)


def test_tfds_names_go_through_tensorflow_datasets():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = datasets.load("mnist")
    assert data.x_train.shape == (12, 784) and data.num_classes == 10
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0


def test_demo_runs_end_to_end_and_shows_the_flattening(tmp_path, capsys):
    out = os.path.join(tmp_path, "demo")
    code = cli.main(["demo", "--epochs", "3", "--num-probes", "8", "--probe-examples", "128",
                     "--quiet", "--output-dir", out, "--landscape"])
    assert code == 0
    printed = capsys.readouterr().out
    with open(os.path.join(out, "results.md")) as f:
        table = f.read()
    # The demo's SA is centered and antithetic: a variant, never labelled as
    # the paper's Algorithm 2.
    for label in ("plain SGD", "SAM", "RS (Alg. 1)", "SA + center, antithetic"):
        assert label in table and label in printed
    assert "SA (Alg. 2)" not in table
    # The rules' demo settings are labelled as such, next to the class defaults.
    assert "Demo settings, not the classes' own defaults" in table
    assert "center=True (class default False)" in printed
    with open(os.path.join(out, "plot.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    runs = {r["algorithm"].split(",")[0]: r for r in results["runs"]}
    assert set(runs) == {"plain SGD", "SAM", "RS (Alg. 1)", "SA + center"}
    for run in runs.values():
        history = run["history"]
        assert len(history["hessian_trace"]) == 3 and len(history["top_eigenvalue"]) == 3
        assert run["hessian_trace"] == history["hessian_trace"][-1]
        assert 0.5 < run["train_accuracy"] <= 1.0 and run["ms_per_step"] > 0
    # After three epochs every flat-minima method is already flatter than
    # plain SGD on the same initial weights and data.
    plain = runs["plain SGD"]["hessian_trace"]
    for name in ("SAM", "RS (Alg. 1)", "SA + center"):
        assert runs[name]["hessian_trace"] < 0.9 * plain, name
    # --landscape: every minimum along the same random directions, one figure.
    with open(os.path.join(out, "landscape.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for name in ("plain_sgd", "sam", "rs_alg_1", "sa_alg_2"):
        line = np.loadtxt(os.path.join(out, f"landscape_{name}_1d.csv"), delimiter=",",
                          skiprows=1)
        plane = np.loadtxt(os.path.join(out, f"landscape_{name}_2d.csv"), delimiter=",",
                           skiprows=1)
        centre = plane[(plane[:, 0] == 0) & (plane[:, 1] == 0), 2]
        assert line[line[:, 0] == 0, 1] == pytest.approx(centre, rel=1e-6), name


def test_demo_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dataset", "--algorithms", "--epochs", "--batch-size", "--learning-rate",
                   "--hidden", "--loss", "--sam-rho", "--rs-rho", "--sa-rho", "--asam-rho",
                   "--sa-paper-rule", "--num-probes", "--probe-examples", "--output-dir",
                   "--no-plot", "--quiet", "--seed"):
        assert option in out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", "0"])
    assert exit_info.value.code == 2 and "--epochs" in capsys.readouterr().err
