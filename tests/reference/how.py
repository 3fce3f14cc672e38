"""How each `how` piece (a Combiner) turns the gradients into the update, by class name.

A reference is `reference(config, g, h, point) -> update` for a step that
perturbed (`g` the clean gradient, `h` the perturbed one); its `plain`
attribute, `plain(config, g, point) -> update`, is the update of a step
that did not (default: `g`). Combiners that keep state are covered at the
first step of a run.
"""

from reference.registration import Table
from reference.vectors import add
from reference.vectors import dot
from reference.vectors import project_out
from reference.vectors import scale
from reference.vectors import unit

HOW_REFERENCES = Table(
    "how", __file__,
    "`reference(config, g, h, point) -> update` (and, for a plain step other than "
    "`g`, a `plain=` function `(config, g, point) -> update`)")


def clean_gradient(config, g, point):
    """A plain step applies the clean gradient."""
    return list(g)


def plain_update(class_name, config, g, point, rule=""):
    reference = HOW_REFERENCES.lookup(class_name, rule)
    return getattr(reference, "plain", clean_gradient)(config, g, point)


@HOW_REFERENCES.register("Replace")
def replace(config, g, h, point):
    """SAM and ASAM: the perturbed gradient replaces the clean one."""
    return list(h)


@HOW_REFERENCES.register("AddOrthogonal")
def add_orthogonal(config, g, h, point):
    """Ahn, Jadbabaie & Sra: `(η/η′)·(g + P⊥h)`, `P⊥h = h - (<h,g>/‖g‖²)·g` (or `h` unprojected)."""
    step = add(g, project_out(h, g) if config["project"] else h)
    return scale(step, config["perturbed_lr_scale"])


@HOW_REFERENCES.register("Mix")
def mix(config, g, h, point):
    """m-RWP's mixed loss: `(1 - λ)·g + λ·h`."""
    weight = config["perturbed_weight"]
    return add(scale(g, 1.0 - weight), h, weight)


@HOW_REFERENCES.register("SurrogateGap")
def surrogate_gap(config, g, h, point):
    """GSAM: `h - α·g⊥`, `g⊥ = g - <g, ĥ>ĥ` the part of `g` orthogonal to `h`."""
    h_unit = unit(h)
    g_orthogonal = add(g, h_unit, -dot(g, h_unit))
    return add(h, g_orthogonal, -config["gap_weight"])


def _reuse_plain(config, g, point):
    """Between SAM steps `g + α·‖g‖·v̂`, and `v̂ = 0` before the first SAM step."""
    assert point.perturbed_before == 0, (
        "the Reuse reference covers plain steps before the first SAM step, where v = 0")
    return list(g)


@HOW_REFERENCES.register("Reuse", plain=_reuse_plain)
def reuse(config, g, h, point):
    """LookSAM: a perturbed step is a full SAM step, `h` (it stores `v̂ = P⊥h/‖P⊥h‖`)."""
    return list(h)
