"""Constructor arguments of the update rules, checked before the rule is built.

`Algorithm.__init_subclass__` wraps every subclass's `__init__` with
`checked_init`, so a misspelt or misplaced argument fails the same way
whether the rule is built directly (`RWP(rho=0.1)`), by name
(`algorithms.get("rwp", rho=0.1)`) or through `FlatMinimaModel`: with a
`TypeError` that names the rule, the argument, the one probably meant and
every accepted one.
"""

import difflib
import functools
import inspect

from keras_flat.algorithms import registry
from keras_flat.utils import deprecation

# Arguments that mean the same thing in different rules or papers, with what
# they are. A rule given one it does not take is pointed to the one it does.
SYNONYMS = (
    (("rho", "sigma", "radius", "eps", "epsilon", "r", "std", "noise_std"), "radius"),
    (("interval", "k", "every", "every_k", "period", "frequency", "freq"), "interval"),
    (("tolerance", "tol", "eps0", "epsilon0", "epsilon_0", "threshold", "grad_tol"),
     "tolerance, the paper's ε0"),
    (("start", "warmup", "start_step", "start_epoch", "begin", "delay"), "start"),
    (("perturbation_sync", "sync", "m_sharpness", "sync_mode"), "perturbation sync"),
    (("examples", "num_examples", "n_examples", "examples_per_step"), "number of examples"),
    (("perturbed_weight", "lmbda", "lam", "lamb", "mix", "mixing"),
     "weight of the perturbed gradient, the official scripts' --lambda"),
    (("threshold_start", "lambda2", "lambda_2", "c_start"), "threshold at the start"),
    (("threshold_end", "lambda1", "lambda_1", "c_end"), "threshold at the end"),
)

_PARAMETER_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    inspect.Parameter.KEYWORD_ONLY)


def checked_init(init):
    """Wraps an `__init__` so its arguments are checked against its signature first.

    Renamed arguments (the class's `RENAMED`) are translated first, with a
    `DeprecationWarning` (see `translate`).

    Args:
        init: The `__init__` function of an `Algorithm` or piece subclass.

    Returns:
        A function with the same signature (for `inspect.signature`) that
        raises `TypeError` with `call_error`'s message when the arguments do
        not fit, and otherwise runs `init`.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        kwargs = translate(type(self), kwargs)
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as error:
            raise TypeError(call_error(type(self), signature, args, kwargs, error)) from None
        init(self, *args, **kwargs)

    return __init__


def translate(cls, kwargs, warn=True):
    """`kwargs` with the deprecated arguments of `cls` turned into the current ones.

    `cls.RENAMED` maps an old argument to its new name, or to a function of
    the old value returning `{new_name: value, ...}` (for an argument whose
    meaning changed, e.g. a weight that became its complement).

    Args:
        cls: The rule or piece class.
        kwargs: The keyword arguments (or a saved config).
        warn: Warn with a `DeprecationWarning` (not for saved configs,
            which load silently).

    Returns:
        A new dict.

    Raises:
        TypeError: if an old argument and its new one are both given.
    """
    out = dict(kwargs)
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old not in out:
            continue
        value = out.pop(old)
        translated = new(value) if callable(new) else {new: value}
        both = [key for key in translated if key in out]
        if both:
            raise deprecation.both_given(rule(cls), old, both[0])
        if warn:
            deprecation.warn_renamed(old, "`, `".join(translated))
        out.update(translated)
    return out


def accepted(cls):
    """The names of the arguments `cls(...)` accepts, in signature order.

    Follows `**kwargs` to the parent class's `__init__` (or a `Recipe`'s
    signature), so a subclass that passes its extra arguments on lists its
    parent's too.
    """
    names = []
    for klass in cls.__mro__:
        if "__signature__" in vars(klass):
            parameters = list(klass.__signature__.parameters.values())
        elif "__init__" in vars(klass):
            parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        else:
            continue
        names += [p.name for p in parameters if p.kind in _PARAMETER_KINDS and p.name not in names]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return names


def current(cls, names):
    """`names` without the deprecated arguments of `cls` (its `RENAMED`)."""
    deprecated_names = getattr(cls, "RENAMED", {})
    return [name for name in names if name not in deprecated_names]


def call_error(cls, signature, args, kwargs, error):
    """The message for arguments that do not fit `signature` (`error` is Python's)."""
    names = current(cls, accepted(cls))
    parameters = list(signature.parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind in _PARAMETER_KINDS[:2]]
    kinds = {p.kind for p in parameters}
    unknown = [key for key in kwargs if key not in signature.parameters]
    twice = [key for key in kwargs if key in positional[:len(args)]]
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty
               and p.kind in _PARAMETER_KINDS and p.name not in kwargs
               and p.name not in positional[:len(args)]]
    allowed = f"Accepted: {', '.join(names) or 'no arguments'}."
    if unknown and inspect.Parameter.VAR_KEYWORD not in kinds:
        received = ", ".join(f"{key}={kwargs[key]!r}" for key in unknown)
        return f"{unknown_arguments(cls, unknown, names)} {allowed} Received: {received}."
    if len(args) > len(positional) and inspect.Parameter.VAR_POSITIONAL not in kinds:
        text = (f"{rule(cls)} takes at most {len(positional)} positional argument"
                f"{'' if len(positional) == 1 else 's'} ({', '.join(positional)}); received "
                f"{len(args)}: {', '.join(repr(a) for a in args)}. Pass the others by "
                "keyword.")
    elif twice:
        key = twice[0]
        text = (f"{rule(cls)} got two values for `{key}`: {args[positional.index(key)]!r} "
                f"by position and {kwargs[key]!r} by keyword.")
    elif missing:
        text = f"{rule(cls)} needs the argument{'s' * (len(missing) > 1)} " + ", ".join(
            f"`{name}`" for name in missing) + "."
    else:
        text = f"{rule(cls)}: {error}."
    return f"{text} {allowed}"


def unknown_arguments(cls, keys, names):
    """The sentences on arguments `cls` does not take, each with the one probably meant."""
    listed = ", ".join(f"`{key}`" for key in keys)
    if len(keys) == 1:
        hint = suggestion(cls, keys[0], names)
        return f"{rule(cls)} got an unknown argument {listed}." + (f" {hint}" if hint else "")
    hints = [f"For `{key}`: {hint}" for key in keys
             if (hint := suggestion(cls, key, names))]
    return " ".join([f"{rule(cls)} got unknown arguments {listed}."] + hints)


def suggestion(cls, key, names):
    """What the user probably meant by `key`, as a sentence, or "" if nothing is close.

    In order: an argument of `cls` that means the same (`SYNONYMS`), one
    spelt alike (`difflib.get_close_matches`), or the registered rules that
    take `key`. Deprecated arguments are never suggested.
    """
    names = current(cls, names)
    for group, meaning in SYNONYMS:
        meant = [name for name in group if name in names and name != key]
        if key in group and meant:
            return f"Did you mean `{meant[0]}` ({cls.__name__}'s {meaning})?"
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"Did you mean `{close[0]}`?"
    others = [entry for entry in registry.entries()
              if entry.cls is not cls and key in current(entry.cls, accepted(entry.cls))]
    if others:
        return f"`{key}` is an argument of " + ", ".join(rule(e.cls) for e in others) + "."
    return ""


def rule(cls):
    """`cls`'s name, with its registered name if it has one: `RWP ("rwp")`."""
    entry = registry.by_class(cls)
    return f'{cls.__name__} ("{entry.name}")' if entry else cls.__name__
