"""What each `where` piece (a Perturbation) computes, in NumPy, by class name.

A reference is `reference(config, point) -> h`: from the piece's config and
the step's `Point` (clean gradient `g`, weights `w`, gradient functions,
the recorded gradient calls of the step), it takes the gradient calls the
piece makes from `point.draws`, checks their offsets and examples against
the paper's formula, and returns the perturbed gradient `h` it evaluates
independently (`point.grad`, `point.sub_grad`) at the recorded offsets,
once they match the formula: the float32 rounding of the perturbed point is
then the step's own, which matters on badly conditioned models (MobileNetV3's
perturbed gradient moves by 1e-4 with the last bit of the point). Random
draws (a sphere sample, Gaussian noise, examples and signs) are read from
the recording and checked for what they must satisfy.
"""

import numpy as np

from reference import layers
from reference.radius import radius_at
from reference.registration import Table
from reference.vectors import add
from reference.vectors import assert_close
from reference.vectors import dot
from reference.vectors import flatten
from reference.vectors import norm
from reference.vectors import scale
from reference.vectors import unit

WHERE_REFERENCES = Table(
    "where", __file__,
    "`reference(config, point) -> h`, taking the piece's gradient calls from "
    "`point.draws`, checking them, and returning the perturbed gradient")


@WHERE_REFERENCES.register("Ascent")
def ascent(config, point):
    """SAM's point `w + ρ·g/‖g‖` (zero offset for a zero gradient)."""
    return _along_gradient("Ascent", config, point)


def _along_gradient(name, config, point):
    """The gradient at `w + ρ·g/‖g‖`, the recorded offset checked against it."""
    rho = radius_at(config["rho"], point)
    eps = scale(unit(point.g), rho)
    offset, subset = point.draws.take(f"{name}: the gradient at w + rho*g/|g|")
    assert subset is None, f"{name} evaluates the whole batch"
    assert_close(offset, eps, f"{name}'s offset rho*g/|g|")
    return point.grad(add(point.w, offset))


@WHERE_REFERENCES.register("FriendlyAscent")
def friendly_ascent(config, point):
    """F-SAM's point `w + ρ·unit(g − σ·m)`, m the average of past batch gradients.

    The zoo checks a run's first step, which has no past gradient: the
    point is SAM's, `w + ρ·g/‖g‖` (tests/test_friendly_sam.py follows the
    average over several steps).
    """
    return _along_gradient("FriendlyAscent", config, point)


@WHERE_REFERENCES.register("ScaledAscent")
def scaled_ascent(config, point):
    """ASAM's point `w + ρ·T²g/‖Tg‖`, `T = |w| + η`, and `T = 1` for offsets."""
    rho = radius_at(config["rho"], point)
    t = [np.ones_like(w) if layers.is_offset(point.model, v) else np.abs(w) + config["eta"]
         for v, w in zip(point.variables, point.w)]
    tg = [a * b for a, b in zip(t, point.g)]
    size = norm(tg)
    eps = [rho * a * a * b / size if size > 0 else np.zeros_like(b)
           for a, b in zip(t, point.g)]
    offset, subset = point.draws.take("ScaledAscent: the gradient at w + rho*T^2 g/|T g|")
    assert subset is None, "ScaledAscent evaluates the whole batch"
    assert_close(offset, eps, "ScaledAscent's offset rho*T^2 g/|T g|")
    return point.grad(add(point.w, offset))


@WHERE_REFERENCES.register("SphereSample")
def sphere_sample(config, point):
    """RS's point `w + ρ·u`, `u` uniform on the unit sphere (and `w - ρ·u`, antithetic)."""
    rho = config["rho"]
    u, subset = point.draws.take("SphereSample: the gradient at w + rho*u")
    assert subset is None, "SphereSample evaluates the whole batch"
    np.testing.assert_allclose(norm(u), rho, rtol=1e-5, err_msg="SphereSample: |rho*u|")
    h = point.grad(add(point.w, u))
    if config["antithetic"]:
        behind, subset = point.draws.take("SphereSample(antithetic): the gradient at w - rho*u")
        assert subset is None
        assert_close(behind, scale(u, -1.0), "SphereSample(antithetic): the second offset -rho*u")
        h = scale(add(h, point.grad(add(point.w, behind))), 0.5)
    return h


@WHERE_REFERENCES.register("ExampleDirection")
def example_direction(config, point):
    """SA's point `w + ρ·σ·s`, `s` the unit gradient of a few random examples.

    The examples' gradient at `w` gives `s` (at a point jittered by
    `jitter·z/√d`, `z` in {±1}^d, when it is zero); `h` is the same
    examples' gradient at `w + ρσs` (the mean of `w ± ρs` when antithetic),
    minus their gradient at `w` when centred.
    """
    rho = config["rho"]
    first, indices = point.draws.take("ExampleDirection: the examples' gradient at w")
    assert first is None, "the examples' gradient is taken at w itself"
    assert indices is not None, "ExampleDirection evaluates a subset of the batch"
    count = min(config["examples"], point.batch_size)
    assert len(indices) == count and len(set(indices.tolist())) == count, indices
    assert np.all((0 <= indices) & (indices < point.batch_size)), indices
    g_sub = point.sub_grad(point.w, indices)
    direction = g_sub
    if norm(g_sub) <= 1e-30:  # The paper's Remark 2: a direction at a jittered point.
        jitter = 0.1 * rho if config["jitter"] is None else config["jitter"]
        offset, again = point.draws.take("ExampleDirection: the jittered examples' gradient")
        np.testing.assert_array_equal(again, indices)
        d = flatten(offset).size
        np.testing.assert_allclose(np.abs(flatten(offset)), jitter / np.sqrt(d), rtol=1e-5)
        direction = point.sub_grad(add(point.w, offset), indices)
    s = unit(direction)
    if config["antithetic"]:
        ahead, again = point.draws.take("ExampleDirection(antithetic): the gradient at w + rho*s")
        np.testing.assert_array_equal(again, indices)
        assert_close(ahead, scale(s, rho), "ExampleDirection(antithetic): offset rho*s")
        behind, again = point.draws.take("ExampleDirection(antithetic): the gradient at w - rho*s")
        np.testing.assert_array_equal(again, indices)
        assert_close(behind, scale(s, -rho), "ExampleDirection(antithetic): offset -rho*s")
        h = scale(add(point.sub_grad(add(point.w, ahead), indices),
                      point.sub_grad(add(point.w, behind), indices)), 0.5)
    else:
        offset, again = point.draws.take("ExampleDirection: the gradient at w + sign*rho*s")
        np.testing.assert_array_equal(again, indices)
        sign = 1.0 if dot(offset, s) >= 0 else -1.0  # The random sign, read back.
        assert_close(offset, scale(s, sign * rho), "ExampleDirection's offset sign*rho*s")
        h = point.sub_grad(add(point.w, offset), indices)
    if config["center"]:
        h = add(h, g_sub, -1.0)
    return h


@WHERE_REFERENCES.register("FilterGaussian")
def filter_gaussian(config, point):
    """RWP's point `w + ε`: each filter's noise has standard deviation `σ·‖w_filter‖`.

    Kernels and embeddings are split into filters (output units); biases
    and normalisation parameters are not perturbed unless
    `include_offsets`, then each as one filter. ARWP (`adaptive`) divides
    the deviation by `sqrt(1 + η·F)`, `F` the accumulated squared perturbed
    gradients: zero before the first perturbed step.

    The noise itself is random: the recorded offset is used as it is,
    after checking that unperturbed variables are untouched and that the
    offset divided by its deviation is standard normal (mean, variance and
    largest entry, pooled over the model).
    """
    sigma = radius_at(config["sigma"], point)
    if config["adaptive"]:
        assert point.perturbed_before == 0, (
            "the FilterGaussian(adaptive) reference covers steps before its first "
            "perturbed one, where F = 0")
    offset, subset = point.draws.take("FilterGaussian: the gradient at w + filter-wise noise")
    assert subset is None, "FilterGaussian evaluates the whole batch"
    standardised = []
    for v, w, e in zip(point.variables, point.w, offset):
        assert e.shape == w.shape, (v.path, e.shape, w.shape)
        perturbed = config["include_offsets"] or layers.is_filtered(point.model, v)
        if not perturbed:
            np.testing.assert_array_equal(e, 0.0, err_msg=f"{v.path} must not be perturbed")
            continue
        axes = layers.filter_reduce_axes(point.model, v)
        std = sigma * np.sqrt(np.sum(np.square(w), axis=axes, keepdims=True))
        std = np.broadcast_to(std, w.shape)
        zero = std == 0
        np.testing.assert_array_equal(e[zero], 0.0, err_msg=f"{v.path}: a zero filter")
        z = e[~zero] / std[~zero]
        assert z.size == 0 or np.any(z != 0), f"{v.path} must be perturbed"
        standardised.append(z)
    z = np.concatenate(standardised) if standardised else np.zeros(0)
    if z.size >= 50:  # Enough entries for the statistics to mean something.
        n = z.size
        assert abs(np.mean(z)) <= 5 / np.sqrt(n), ("FilterGaussian: mean of noise/std", n,
                                                   np.mean(z))
        assert abs(np.var(z) - 1) <= 5 * np.sqrt(2 / n), (
            "FilterGaussian: the noise's variance, in units of (sigma*|w_filter|)^2", n,
            np.var(z))
        assert np.max(np.abs(z)) <= 6.5, ("FilterGaussian: largest noise/std", np.max(np.abs(z)))
    return point.grad(add(point.w, offset))
