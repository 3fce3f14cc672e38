"""A rule's step assembled from the references of its pieces."""

import dataclasses

from reference.how import HOW_REFERENCES
from reference.how import plain_update
from reference.registration import MissingReference
from reference.when import WHEN_REFERENCES
from reference.when import decide
from reference.when import schedule_names
from reference.where import WHERE_REFERENCES

ROLES = ("when", "where", "how")


def pieces_of(rule):
    """`{"when": ..., "where": ..., "how": ...}`: the piece instances of `rule`, or None.

    Read from the rule's `when`, `where` and `how` attributes when it has
    them, else from its `pieces()`; None for a rule not made of pieces.
    """
    if all(hasattr(rule, role) for role in ROLES):
        return {role: getattr(rule, role) for role in ROLES}
    if callable(getattr(rule, "pieces", None)):
        pieces = dict(rule.pieces())
        assert set(pieces) == set(ROLES), pieces
        return pieces
    return None


def describe(piece):
    """`(class name, config)` of a piece instance."""
    return type(piece).__name__, dict(piece.get_config())


def rule_label(rule):
    return f"rule {type(rule).__name__}"


def check_references(rule):
    """Raises `MissingReference` naming every piece of `rule` with no reference here."""
    pieces = pieces_of(rule)
    label = rule_label(rule)
    if pieces is None:
        if getattr(rule, "perturbs", True):
            raise MissingReference(
                f"{label} is not made of when/where/how pieces and perturbs: give it "
                "pieces, or a reference of its own in tests/reference/step.py.")
        return
    problems = []
    when_name, when_config = describe(pieces["when"])
    for name in schedule_names(when_name, when_config):
        try:
            WHEN_REFERENCES.lookup(name, label)
        except MissingReference as error:
            problems.append(str(error))
    for role, table in (("where", WHERE_REFERENCES), ("how", HOW_REFERENCES)):
        try:
            table.lookup(describe(pieces[role])[0], label)
        except MissingReference as error:
            problems.append(str(error))
    if problems:
        raise MissingReference("\n".join(problems))


class Draws:
    """The gradient calls a step made, `(offset or None, subset indices or None)`, in order."""

    def __init__(self, calls):
        self.calls = list(calls)
        self.taken = 0

    def take(self, what):
        """The next call; fails naming the call `what` the reference expected."""
        assert self.taken < len(self.calls), (
            f"expected a gradient call ({what}), but the step made only {len(self.calls)}")
        call = self.calls[self.taken]
        self.taken += 1
        return call

    def check_all_taken(self, label):
        extra = self.calls[self.taken:]
        assert not extra, (
            f"{label}: the step made {len(extra)} gradient call(s) more than its reference "
            f"({[(o is not None, s) for o, s in extra]})")


@dataclasses.dataclass
class Point:
    """What the references see of one training step.

    Attributes:
        g: The clean gradient (NumPy arrays).
        w: The trainable weights before the step.
        variables: The trainable variables, in the same order.
        model: The Keras model that owns them.
        grad: `grad(values)`, the batch gradient at `values`.
        sub_grad: `sub_grad(values, indices)`, the gradient of the chosen
            examples' mean loss at `values`.
        draws: The step's recorded gradient calls (`Draws`).
        batch_size: Examples in the batch.
        step: The optimizer's iterations before the step.
        planned_steps: The steps the current `fit` plans.
        learning_rate: The optimizer's learning rate at the step.
        largest_learning_rate: The largest learning rate of the run before
            the step (0 before the first).
        perturbed_before: Perturbed steps of the run before this one.
    """

    g: list
    w: list
    variables: list
    model: object
    grad: object
    sub_grad: object
    draws: Draws
    batch_size: int
    step: int = 0
    planned_steps: int = 1
    learning_rate: float = 0.1
    largest_learning_rate: float = 0.0
    perturbed_before: int = 0


def reference_step(rule, point):
    """`(perturbed, update)`: whether `rule` perturbs at `point`, and the update it applies.

    Assembled from the references of the rule's pieces: the schedule's
    decision; on a perturbed step the perturbation's `h` (checked against
    the recorded gradient calls) combined with `g` by the combiner's
    reference; otherwise the combiner's plain update. A rule not made of
    pieces that never perturbs applies `g`. Every recorded gradient call
    must be accounted for.
    """
    check_references(rule)
    label = rule_label(rule)
    pieces = pieces_of(rule)
    if pieces is None:
        point.draws.check_all_taken(label)
        return False, list(point.g)
    when_name, when_config = describe(pieces["when"])
    where_name, where_config = describe(pieces["where"])
    how_name, how_config = describe(pieces["how"])
    if decide(when_name, when_config, point, label):
        h = WHERE_REFERENCES.lookup(where_name, label)(where_config, point)
        update = HOW_REFERENCES.lookup(how_name, label)(how_config, point.g, h, point)
        perturbed = True
    else:
        update = plain_update(how_name, how_config, point.g, point, label)
        perturbed = False
    point.draws.check_all_taken(label)
    return perturbed, update
