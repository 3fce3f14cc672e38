"""The README's "Use" example, run as written on scikit-learn's digits, trains as well as plain Keras.

The example is read from README.md itself, so the test follows the README. Plain
Keras runs the same code with the wrapper line replaced by the inner model, from
the same seed (same initial weights and batch order).
"""

import os
import re

import keras
import numpy as np

from keras_flat.app import datasets

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
WRAPPER_LINE = re.compile(r"^model = keras_flat\.FlatMinimaModel\(.*$", re.MULTILINE)


def use_example():
    text = open(README, encoding="utf-8").read()
    section = text.split("\n## Use\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run(code, seed, data, tmp_path):
    keras.utils.set_random_seed(seed)
    namespace = {"x_train": data.x_train, "y_train": data.y_train,
                 "x_test": data.x_test, "y_test": data.y_test}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, README, "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    return namespace


def test_the_use_example_with_the_default_rule_trains_as_well_as_plain_keras(tmp_path):
    code = use_example()
    assert len(WRAPPER_LINE.findall(code)) == 1
    wrapper_line = WRAPPER_LINE.search(code).group(0)
    assert "keras_flat.FlatMinimaModel(inner, seed=0)" in wrapper_line  # The default rule.
    fit_end = code.index("history = model.fit(")
    fit_end = code.index("\n", fit_end) + 1
    plain_code = WRAPPER_LINE.sub("model = inner", code[:fit_end])
    data = datasets.load("digits")
    wrapped, plain = [], []
    for seed in (0, 1):
        ns = run(code, seed, data, tmp_path)
        history = ns["history"].history
        wrapped.append(history["val_accuracy"][-1])
        # The default rule perturbs some steps, not none and not all.
        assert 0.05 < np.mean(history["perturbed"]) < 0.95
        restored = ns["restored"]
        np.testing.assert_allclose(restored.predict(data.x_test[:16], verbose=0),
                                   ns["model"].predict(data.x_test[:16], verbose=0),
                                   atol=1e-6)
        plain.append(run(plain_code, seed, data, tmp_path)["history"].history["val_accuracy"][-1])
    # SA, which perturbs every step from initialisation, ends at 13-40% here.
    assert np.mean(plain) > 0.9
    assert np.mean(wrapped) >= np.mean(plain) - 0.02, (wrapped, plain)
