"""Arguments a rule does not take fail with an error the user can act on.

However the rule is built (directly, by name through `algorithms.get`, or
through `FlatMinimaModel`), the `TypeError` names the rule, the argument,
the argument probably meant and every argument the rule accepts.
"""

import inspect

import pytest

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms import registry

from helpers import mlp

BUILDERS = {
    "class": lambda name, **kwargs: registry.entry(name).cls(**kwargs),
    "get": lambda name, **kwargs: algorithms.get(name, **kwargs),
    "model": lambda name, **kwargs: keras_flat.FlatMinimaModel(mlp(), name, **kwargs),
}


def _message(build, name, **kwargs):
    with pytest.raises(TypeError) as info:
        BUILDERS[build](name, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("build", sorted(BUILDERS))
def test_rwp_given_rho_is_pointed_to_sigma(build):
    message = _message(build, "rwp", rho=0.1)
    assert message == (
        'RWP ("rwp") got an unknown argument `rho`. Did you mean `sigma` (RWP\'s radius)? '
        "Accepted: sigma, perturbed_weight, include_offsets, interval, start, "
        "perturbation_sync. "
        "Received: rho=0.1.")


@pytest.mark.parametrize("name", algorithms.names())
def test_every_rule_names_itself_the_argument_and_what_it_accepts(name):
    cls = registry.entry(name).cls
    message = _message("class", name, no_such_argument=1)
    assert f'{cls.__name__} ("{name}") got an unknown argument `no_such_argument`.' in message
    accepted = list(inspect.signature(cls).parameters)  # Deprecated names are not listed.
    assert f"Accepted: {', '.join(accepted)}." in message


@pytest.mark.parametrize("name, given, meant", [
    ("arwp", "rho", "sigma"),  # The radius of the random-perturbation rules.
    ("sam", "sigma", "rho"),
    ("looksam", "period", "interval"),  # LookSAM's full SAM step every `interval` steps.
    ("sam", "k", "interval"),
    ("sa", "tol", "tolerance"),
    ("rs", "num_examples", None),  # RS draws no examples: no suggestion.
    ("sam", "sync", "perturbation_sync"),
    ("asam", "etta", "eta"),  # A misspelling: difflib's nearest.
    ("sa", "exmples", "examples"),
])
def test_the_nearest_accepted_argument_is_suggested(name, given, meant):
    message = _message("get", name, **{given: 1})
    if meant is None:
        assert "Did you mean" not in message
    else:
        assert f"Did you mean `{meant}`" in message


def test_an_argument_of_other_rules_names_them():
    message = _message("class", "sam", ema_decay=0.1)
    assert ("`ema_decay` is an argument of AESAM (\"aesam\"), ARWP (\"arwp\"), "
            "FriendlySAM (\"fsam\").") in message
    # A deprecated name is never suggested: `alpha` is deprecated in GSAM, LookSAM and RWP.
    assert "is an argument of" not in _message("class", "sam", alpha=0.1)


def test_deprecated_arguments_are_not_suggested():
    assert "Did you mean `perturbed_weight`" in _message("get", "rwp", lmbda=0.3)
    message = _message("get", "aesam", threshold=0.3)
    assert "thresholds" not in message.split("Accepted")[0]


def test_several_unknown_arguments_are_all_named():
    message = _message("get", "rwp", rho=0.1, k=2)
    assert "unknown arguments `rho`, `k`" in message and "Received: rho=0.1, k=2." in message
    assert "For `rho`: Did you mean `sigma`" in message and "For `k`: Did you mean `interval`" \
        in message


def test_wrong_positional_use_is_explained():
    with pytest.raises(TypeError, match=r'SAM \("sam"\) takes at most 3 positional arguments '
                                        r"\(rho, interval, start\); "
                                        r"received 4: 0.1, 1, None, 2\."):
        algorithms.SAM(0.1, 1, None, 2)
    with pytest.raises(TypeError, match=r"two values for `rho`: 0.1 by position and 0.2 by "
                                        "keyword"):
        algorithms.SAM(0.1, rho=0.2)
    with pytest.raises(TypeError, match=r"Composite needs the argument `where`\. Accepted: "
                                        "where, how, when, perturbation_sync"):
        algorithms.Composite()


def test_the_check_keeps_signatures_and_subclasses_that_pass_arguments_on():
    from keras_flat.algorithms import arguments

    assert list(inspect.signature(algorithms.RWP).parameters)[:2] == ["sigma",
                                                                      "perturbed_weight"]

    class Extra(algorithms.SAM):
        def __init__(self, extra=1, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

    assert Extra(extra=2, rho=0.3).rho == 0.3
    assert arguments.accepted(Extra) == ["extra", "rho", "interval", "start", "perturbation_sync"]
    with pytest.raises(TypeError, match=r"Extra got an unknown argument `rh`\. Did you mean "
                                        r"`rho`\? Accepted: extra, rho,"):
        Extra(rh=0.3)
