"""Whether each `when` piece (a Schedule) perturbs a step, by class name.

A reference is `reference(config, point) -> bool`: from the schedule's
config and the step's `Point` (its step count, the fraction of the planned
steps done, the clean gradient), whether the step perturbs. Schedules that
keep statistics over steps are covered at the first step of a run.
"""

from reference.registration import Table
from reference.vectors import norm

WHEN_REFERENCES = Table(
    "when", __file__,
    "`reference(config, point) -> bool`, whether the step at `point` perturbs")


def decide(class_name, config, point, rule=""):
    """Whether the schedule `class_name` with `config` perturbs at `point`."""
    return bool(WHEN_REFERENCES.lookup(class_name, rule)(config, point))


def schedule_names(class_name, config):
    """`class_name` and the class names of the schedules it is made of."""
    yield class_name
    children = getattr(WHEN_REFERENCES.get(class_name), "children", None)
    for child in children(config) if children else ():
        yield from schedule_names(child["class_name"], child["config"])


@WHEN_REFERENCES.register("Always")
def always(config, point):
    return True


@WHEN_REFERENCES.register("Every")
def every(config, point):
    """Every `interval`-th step, the first (step 0) included."""
    return point.step % config["interval"] == 0


@WHEN_REFERENCES.register("GradNormAtMost")
def grad_norm_at_most(config, point):
    """The paper's ε0: when the clean gradient's norm is at most `tolerance`."""
    return norm(point.g) <= config["tolerance"]


@WHEN_REFERENCES.register("StartingAt")
def starting_at(config, point):
    """From step `start` (an integer) or a fraction `start` of the planned steps on."""
    start = config["start"]
    if isinstance(start, float):
        return point.step / max(point.planned_steps, 1) >= start
    return point.step >= start


@WHEN_REFERENCES.register("AdaptiveTrigger")
def adaptive_trigger(config, point):
    """AE-SAM: `‖g‖² >= μ + c·σ`, with running mean μ and variance σ² of ‖g‖².

    At the first step μ = ‖g‖² and σ² = 0, so it perturbs whatever `c`
    (`c` runs from `threshold_start` to `threshold_end` over the planned
    steps).
    """
    assert point.step == 0, "the AdaptiveTrigger reference covers the first step of a run"
    s = norm(point.g) ** 2
    mean, variance = s, 0.0
    progress = min(max(point.step / max(point.planned_steps, 1), 0.0), 1.0)
    c = config["threshold_start"] + (config["threshold_end"] - config["threshold_start"]) * (
        progress)
    return s >= mean + c * variance ** 0.5


def _all_of_children(config):
    return config["schedules"]


@WHEN_REFERENCES.register("AllOf", children=_all_of_children)
def all_of(config, point):
    """When every one of `schedules` perturbs."""
    return all(decide(child["class_name"], child["config"], point)
               for child in config["schedules"])
