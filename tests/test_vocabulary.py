"""One name, one meaning: the renamed arguments, flags and names.

Each renamed argument is checked three ways: the new name gives the right
number (against a reference computed here with NumPy, independently of the
package: the Hessian of a linear least-squares model is (2/n) XᵀX), the old
name gives the identical result with a `DeprecationWarning` naming both,
and passing both raises a `TypeError` naming both. docs/glossary.md lists
the names.
"""

import argparse
import inspect
import os
import re
import warnings

import keras
import numpy as np
import pytest

from keras_flat import callbacks
from keras_flat import hessian
from keras_flat import landscape
from keras_flat.app import cli
from keras_flat.app import cli_arguments
from keras_flat.app import datasets
from keras_flat.app import demo
from keras_flat.utils import deprecation

N, D = 32, 4


def _linear(seed=0, w=None):
    """`x -> x·w` (Dense(1) without bias) compiled with the mean squared error."""
    init = (keras.initializers.Constant(np.asarray(w, "float32").reshape(D, 1)) if w is not None
            else keras.initializers.GlorotUniform(seed=seed))
    model = keras.Sequential([keras.Input((D,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer=init)])
    model.compile(loss="mse")
    return model


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, D)).astype("float32") * np.array([3.0, 1.5, 1.0, 0.5], "float32")
    y = rng.normal(size=(N, 1)).astype("float32")
    reference = 2.0 / N * x.astype(np.float64).T @ x.astype(np.float64)  # Exact Hessian.
    return _linear(), (x, y), reference


def _old(function, *args, expect, **kwargs):
    """Calls with old names; checks one warning per old name, naming old and new."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
                and "is deprecated" in str(w.message)]
    for old, new in expect.items():
        assert any(f"`{old}`" in m and f"`{new}`" in m for m in messages), (old, messages)
    assert all(w.filename == __file__ for w in caught
               if issubclass(w.category, DeprecationWarning) and "is deprecated" in str(w.message))
    return result


def _new(function, *args, **kwargs):
    """Calls with new names; no renamed-name warning may appear."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*is deprecated and will be removed",
                                category=DeprecationWarning)
        return function(*args, **kwargs)


def _both(function, *args, old, new, **kwargs):
    with pytest.raises(TypeError, match=rf"`{old}`.*`{new}`"):
        function(*args, **kwargs)


# The shared helper itself.

def test_renamed_arguments_translates_warns_and_refuses_both():
    @deprecation.renamed_arguments(k="count", tol="rtol")
    def f(a, count=1, rtol=0.5):
        return a, count, rtol

    assert list(inspect.signature(f).parameters) == ["a", "count", "rtol"]
    assert _old(f, 1, k=3, tol=0.1, expect={"k": "count", "tol": "rtol"}) == (1, 3, 0.1)
    assert _new(f, 1, count=3, rtol=0.1) == (1, 3, 0.1)
    _both(f, 1, k=3, count=3, old="k", new="count")
    _both(f, 1, 3, k=3, old="k", new="count")  # The new one by position.
    with pytest.raises(ValueError, match="no argument `missing`"):
        deprecation.renamed_arguments(old="missing")(lambda a: a)
    with pytest.raises(ValueError, match="still has the old argument `a`"):
        deprecation.renamed_arguments(a="b")(lambda a, b: a)


def test_renamed_attribute_config_and_module_names():
    class Thing:
        old = deprecation.renamed_attribute("old", "new")

        def __init__(self):
            self.new = 1

    thing = Thing()
    assert _old(getattr, thing, "old", expect={"Thing.old": "Thing.new"}) == 1
    _old(setattr, thing, "old", 2, expect={"Thing.old": "Thing.new"})
    assert thing.new == 2
    config = _old(deprecation.renamed_config, "Thing", {"k": 2, "seed": 0},
                  {"k": "num_eigenvalues"}, expect={"k": "num_eigenvalues"})
    assert config == {"num_eigenvalues": 2, "seed": 0}
    with pytest.raises(TypeError, match="`k`.*`num_eigenvalues`"):
        deprecation.renamed_config("Thing", {"k": 2, "num_eigenvalues": 2},
                                   {"k": "num_eigenvalues"})


# keras_flat.hessian: hvp_method, estimator, num_eigenvalues, rtol, bandwidth.

def test_top_eigenvalues_old_names_give_the_same_exact_eigenvalues(problem):
    model, data, reference = problem
    exact = np.sort(np.linalg.eigvalsh(reference))[::-1][:2]
    for estimator in ("lanczos", "power"):
        new = _new(hessian.top_eigenvalues, model, data, num_eigenvalues=2, estimator=estimator,
                   rtol=1e-7, max_iterations=400)
        old = _old(hessian.top_eigenvalues, model, data, k=2, method=estimator, tol=1e-7,
                   max_iterations=400,
                   expect={"k": "num_eigenvalues", "method": "estimator", "tol": "rtol"})
        np.testing.assert_allclose(new.values, exact, rtol=1e-4)
        np.testing.assert_array_equal(old.values, new.values)
        np.testing.assert_array_equal(old.vectors, new.vectors)
    _both(hessian.top_eigenvalues, model, data, k=2, num_eigenvalues=2, old="k",
          new="num_eigenvalues")
    _both(hessian.top_eigenvalues, model, data, 2, k=2, old="k", new="num_eigenvalues")
    _both(hessian.top_eigenvalues, model, data, method="power", estimator="power",
          old="method", new="estimator")
    _both(hessian.top_eigenvalues, model, data, tol=0.1, rtol=0.1, old="tol", new="rtol")


def test_hessian_trace_estimator_and_hvp_method(problem):
    model, data, reference = problem
    # Hutch++ with a sketch spanning all D directions is exact.
    new = _new(hessian.hessian_trace, model, data, num_probes=3 * D, estimator="hutch++",
               hvp_method="double_backward")
    old = _old(hessian.hessian_trace, model, data, num_probes=3 * D, method="hutch++",
               hvp_method="double_backward", expect={"method": "estimator"})
    assert new.value == pytest.approx(np.trace(reference), rel=1e-5)
    assert old.value == new.value and old.estimator == "hutch++"
    assert _old(getattr, old, "method", expect={"TraceEstimate.method":
                                                "TraceEstimate.estimator"}) == "hutch++"
    _both(hessian.hessian_trace, model, data, method="hutch++", estimator="hutch++",
          old="method", new="estimator")


def test_hvp_and_operator_take_hvp_method(problem):
    model, data, reference = problem
    v = np.arange(1.0, D + 1.0, dtype="float32")
    for name in hessian.HVP_METHODS:
        new = _new(hessian.hvp, model, data, v, hvp_method=name).numpy()
        old = _old(hessian.hvp, model, data, v, method=name,
                   expect={"method": "hvp_method"}).numpy()
        np.testing.assert_allclose(new, reference @ v, rtol=1e-5)
        np.testing.assert_array_equal(old, new)
        op = _old(hessian.HessianOperator, model, data, method=name,
                  expect={"method": "hvp_method"})
        assert op.method == name
        np.testing.assert_array_equal(op.matvec_flat(v).numpy(), new)
    _both(hessian.hvp, model, data, v, method="double_backward", hvp_method="double_backward",
          old="method", new="hvp_method")
    _both(hessian.HessianOperator, model, data, method="double_backward",
          hvp_method="double_backward", old="method", new="hvp_method")
    # `method` in the operator options of exact_hessian meant the HVP method too.
    exact = _old(hessian.exact_hessian, model, data, method="double_backward",
                 expect={"method": "hvp_method"})
    np.testing.assert_allclose(exact, reference, rtol=1e-5)


def test_spectral_density_bandwidth(problem):
    model, data, reference = problem
    new = _new(hessian.spectral_density, model, data, num_steps=D, bandwidth=0.25,
               hvp_method="double_backward")
    old = _old(hessian.spectral_density, model, data, num_steps=D, sigma=0.25,
               method="double_backward", expect={"sigma": "bandwidth", "method": "hvp_method"})
    # With D Lanczos steps the nodes are the eigenvalues themselves.
    np.testing.assert_allclose(np.sort(new.nodes[0]), np.linalg.eigvalsh(reference), rtol=1e-4)
    assert new.bandwidth == 0.25
    np.testing.assert_array_equal(old.density, new.density)
    assert _old(getattr, new, "sigma", expect={"SpectralDensity.sigma":
                                               "SpectralDensity.bandwidth"}) == 0.25
    rebuilt = _old(hessian.SpectralDensity, grid=new.grid, density=new.density,
                   nodes=new.nodes, weights=new.weights, sigma=0.25,
                   expect={"sigma": "bandwidth"})
    assert rebuilt.bandwidth == 0.25
    _both(hessian.spectral_density, model, data, sigma=0.1, bandwidth=0.1, old="sigma",
          new="bandwidth")


# keras_flat.landscape: num_directions, resolution.

def test_random_directions_num_directions(problem):
    model, _, _ = problem
    new = _new(landscape.random_directions, model, num_directions=3, seed=5, normalization=None)
    old = _old(landscape.random_directions, model, k=3, seed=5, normalization=None,
               expect={"k": "num_directions"})
    rng = np.random.default_rng(5)  # Raw standard normal draws, one per direction.
    expected = np.stack([rng.standard_normal(D) for _ in range(3)]).astype("float32")
    np.testing.assert_array_equal(new.vectors, expected)
    np.testing.assert_array_equal(old.vectors, new.vectors)
    _both(landscape.random_directions, model, k=2, num_directions=2, old="k",
          new="num_directions")


def test_eigen_directions_num_directions(problem):
    model, data, reference = problem
    values, vectors = np.linalg.eigh(reference)
    new = _new(landscape.eigen_directions, model, data, num_directions=1, rtol=1e-8,
               max_iterations=D)
    old = _old(landscape.eigen_directions, model, data, k=1, tol=1e-8, max_iterations=D,
               expect={"k": "num_directions", "tol": "rtol"})
    assert new.values[0] == pytest.approx(values[-1], rel=1e-5)
    assert abs(float(new.vectors[0] @ vectors[:, -1])) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(old.vectors, new.vectors)
    _both(landscape.eigen_directions, model, data, k=1, num_directions=1, old="k",
          new="num_directions")


def test_interpolate_resolution(problem):
    _, (x, y), _ = problem
    wa, wb = np.linspace(-1, 1, D), np.linspace(2, 0, D)
    a, b = _linear(w=wa), _linear(w=wb)
    new = _new(landscape.interpolate, a, b, (x, y), resolution=5, metrics=False)
    old = _old(landscape.interpolate, a, b, (x, y), num=5, metrics=False,
               expect={"num": "resolution"})
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    expected = [np.mean((x64 @ ((1 - t) * wa + t * wb) - y64[:, 0]) ** 2) for t in new.alphas]
    np.testing.assert_allclose(new.loss, expected, rtol=1e-5)
    np.testing.assert_array_equal(old.alphas, new.alphas)
    np.testing.assert_array_equal(old.loss, new.loss)
    _both(landscape.interpolate, a, b, (x, y), num=5, resolution=5, old="num", new="resolution")


# keras_flat.callbacks: estimator, num_eigenvalues, rtol, HessianSpectrum.

def _measure(callback, model):
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    return logs


def test_callbacks_take_the_new_names(problem):
    model, data, reference = problem
    exact = np.sort(np.linalg.eigvalsh(reference))[::-1]
    options = dict(batch_size=N, num_batches=1)
    top = _new(callbacks.TopEigenvalue, data, num_eigenvalues=2, estimator="power", rtol=1e-7,
               max_iterations=400, **options)
    top_old = _old(callbacks.TopEigenvalue, data, k=2, method="power", tol=1e-7,
                   max_iterations=400, **options,
                   expect={"k": "num_eigenvalues", "method": "estimator", "tol": "rtol"})
    logs, logs_old = _measure(top, model), _measure(top_old, model)
    assert logs["top_eigenvalue"] == pytest.approx(exact[0], rel=1e-4)
    assert logs["top_eigenvalue_2"] == pytest.approx(exact[1], rel=1e-4)
    assert logs_old == logs
    assert _old(getattr, top_old, "k", expect={"TopEigenvalue.k":
                                               "TopEigenvalue.num_eigenvalues"}) == 2
    _both(callbacks.TopEigenvalue, data, k=2, num_eigenvalues=2, old="k", new="num_eigenvalues")

    trace = _new(callbacks.HessianTrace, data, num_probes=3 * D, estimator="hutch++", **options)
    trace_old = _old(callbacks.HessianTrace, data, num_probes=3 * D, method="hutch++",
                     **options, expect={"method": "estimator"})
    logs, logs_old = _measure(trace, model), _measure(trace_old, model)
    assert logs["hessian_trace"] == pytest.approx(np.trace(reference), rel=1e-5)
    assert logs_old == logs
    _both(callbacks.HessianTrace, data, method="hutch++", estimator="hutch++", old="method",
          new="estimator")


def test_the_spectrum_callback_and_the_result_class_have_different_names(problem):
    model, data, reference = problem
    assert callbacks.HessianSpectrum is not hessian.SpectralDensity
    old_class = _old(getattr, callbacks, "SpectralDensity",
                     expect={"keras_flat.callbacks.SpectralDensity":
                             "keras_flat.callbacks.HessianSpectrum"})
    assert old_class is callbacks.HessianSpectrum
    spectrum = callbacks.HessianSpectrum(data, num_steps=D, batch_size=N, num_batches=1)
    logs = _measure(spectrum, model)
    assert isinstance(spectrum.last, hessian.SpectralDensity)
    values = np.linalg.eigvalsh(reference)
    assert logs["hessian_spectrum_max"] == pytest.approx(values[-1], rel=1e-4)
    assert logs["hessian_spectrum_min"] == pytest.approx(values[0], rel=1e-3)
    with pytest.raises(AttributeError):
        callbacks.NoSuchCallback  # noqa: B018


# The demo's functions.

def test_demo_functions_take_probe_examples():
    for function in (demo.run_one, demo.compare, demo.plot_landscapes):
        assert "probe_examples" in inspect.signature(function).parameters
        assert "probe_size" not in inspect.signature(function).parameters
    data = datasets.load("digits", limit=40)
    assert _old(demo.compare, data, names=(), probe_size=8,
                expect={"probe_size": "probe_examples"}) == []
    _both(demo.compare, data, names=(), probe_size=8, probe_examples=8, old="probe_size",
          new="probe_examples")


def test_demo_settings_are_labelled_against_the_class_defaults():
    from keras_flat import algorithms

    rs_default = inspect.signature(algorithms.RandomSmoothing).parameters["rho"].default
    sa_default = inspect.signature(algorithms.SharpnessAware).parameters["rho"].default
    rs_demo = algorithms.registry.entry("rs").defaults["rho"]
    text = demo.demo_settings(["none", "sam", "rs", "sa"])
    assert f"rho={rs_demo} (class default {rs_default})" in text
    assert f"(class default {sa_default})" in text
    assert "center=True (class default False)" in text
    assert "SAM:" not in text  # The demo's SAM radius is the class's.
    # A radius the user gives is not a demo setting; nor is SA as the paper's rule.
    text = demo.demo_settings(["rs", "sa"], {"rs": 1.0, "sa": 0.2}, sa_paper_rule=True)
    assert text == ""
    assert "a demo setting" in demo.describe_default("rs", "rho")
    assert demo.describe_default("sam", "rho") == str(
        inspect.signature(algorithms.SAM).parameters["rho"].default)


# The command line.

def _demo_parser():
    parser = argparse.ArgumentParser(prog="keras-flat demo")
    cli.add_demo_arguments(parser)
    return parser


def test_old_flags_parse_to_the_same_settings_and_say_so(capsys):
    parser = _demo_parser()
    new = parser.parse_args(["--learning-rate", "0.1", "--output-dir", "d", "--num-probes", "4",
                             "--algorithms", "sam", "rs"])
    capsys.readouterr()
    old = parser.parse_args(["--lr", "0.1", "--out", "d", "--probes", "4", "--methods", "sam",
                             "rs"])
    err = capsys.readouterr().err
    assert vars(old) == vars(new)
    for old_flag, new_flag in (("--lr", "--learning-rate"), ("--out", "--output-dir"),
                               ("--probes", "--num-probes"), ("--methods", "--algorithms")):
        assert re.search(rf"{old_flag} is deprecated.*use {new_flag} instead", err), old_flag
    usage, text = parser.format_usage(), parser.format_help()
    options, epilog = text.split("Deprecated spellings")
    for old_flag, new_flag in (("--lr", "--learning-rate"), ("--out", "--output-dir"),
                               ("--probes", "--num-probes"), ("--methods", "--algorithms")):
        assert f"{old_flag} " not in usage and f"{old_flag} " not in options
        assert f"{old_flag} (now {new_flag})" in " ".join(epilog.split())
    with pytest.raises(SystemExit):
        parser.parse_args(["--methods", "no_such_rule"])  # Same choices as --algorithms.


def test_the_landscape_command_writes_the_same_files_under_the_old_flag(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, D)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model = _linear()
    path, data = str(tmp_path / "m.keras"), str(tmp_path / "d.npz")
    model.save(path)
    np.savez(data, x=x, y=y)
    argv = ["landscape", path, "--data", data, "--resolution", "3", "--resolution-1d", "3"]
    assert cli.main([*argv, "--output-dir", str(tmp_path / "new")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "old")]) == 0
    assert "--out is deprecated" in capsys.readouterr().err
    for name in ("landscape_1d.csv", "landscape_2d.csv"):
        with open(tmp_path / "new" / name) as a, open(tmp_path / "old" / name) as b:
            assert a.read() == b.read()
    # The loss at the weights, as NumPy computes it.
    with open(tmp_path / "new" / "landscape_2d.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    centre = [float(r[2]) for r in rows if float(r[0]) == 0 and float(r[1]) == 0][0]
    w = np.asarray(model.trainable_variables[0], np.float64)[:, 0]
    assert centre == pytest.approx(np.mean((x.astype(np.float64) @ w - y[:, 0]) ** 2), rel=1e-5)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "0", "-1", "x"])
def test_one_rule_for_positive_numbers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0"):
        cli_arguments.positive_float(text)


def test_number_types_accept_what_they_should():
    assert cli_arguments.positive_float("1e-3") == 1e-3
    assert cli_arguments.non_negative_float("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0"):
        cli_arguments.non_negative_float("inf")
    assert cli_arguments.int_at_least(2)("2") == 2
    for bad in ("1", "2.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="integer >= 2"):
            cli_arguments.int_at_least(2)(bad)


@pytest.mark.parametrize("argv, flag", [
    (["demo", "--learning-rate", "inf"], "--learning-rate"),
    (["demo", "--sa-rho", "nan"], "--sa-rho"),
    (["landscape", "m.keras", "--data", "d.npz", "--extent", "inf"], "--extent"),
])
def test_every_subcommand_rejects_non_finite_numbers(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_the_command_line_runs_as_a_module():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "keras_flat", "landscape", "--help"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0
    assert "--output-dir" in result.stdout
    assert "--out (now --output-dir)" in " ".join(result.stdout.split())


def test_the_glossary_names_every_argument_of_the_public_functions():
    import dataclasses

    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "docs", "glossary.md"), encoding="utf-8").read()
    listed = set(re.findall(r"`([a-z_0-9]+)`", text))
    objects = ([getattr(hessian, n) for n in hessian.__all__]
               + [getattr(landscape, n) for n in landscape.__all__]
               + [callbacks.HessianTrace, callbacks.TopEigenvalue, callbacks.HessianSpectrum]
               + [demo.run_one, demo.compare, demo.plot_landscapes, demo.make_algorithm,
                  demo.plot])
    missing = {}
    for obj in objects:
        if (not callable(obj) or dataclasses.is_dataclass(obj)  # Results, not arguments.
                or isinstance(obj, type) and issubclass(obj, Exception)):
            continue
        for p in inspect.signature(obj).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in listed:
                missing.setdefault(p.name, []).append(obj.__name__)
    assert not missing, missing
    for old in ("`method`", "`k`", "`tol`", "`probe_size`", "`--out`", "`--lr`"):
        assert old in text.split("## Renamed in this release")[1]
