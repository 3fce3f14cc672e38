"""Finds where a model cannot be differentiated (twice), and names the layer.

TensorFlow returns no gradient (`None`, which a measurement would otherwise
turn into zeros) when the path from a variable to the loss goes through an
operation without a gradient, e.g. `tf.round`, `tf.numpy_function` or an
operation whose gradient is explicitly disabled. Such a Hessian would be
silently zero. The checks below run once, while a measurement is traced:
a variable that the traced loss (or gradient) depends on through
floating-point operations, but whose derivative TensorFlow cannot form, is
reported with the layer and the operation responsible.
"""

import re

import tensorflow as tf

from keras_flat.utils import internals

# Operations declared constant in their inputs: a path through them is not a
# dependency (a user's stop_gradient is meant to give zero).
_CONSTANT_OPS = ("StopGradient", "ZerosLike", "OnesLike")
# Step functions: TensorFlow registers a gradient that returns None.
_STEP_OPS = ("Round", "Floor", "Ceil", "Rint")
_SUFFIX = re.compile(r"_\d+$")


class NotTwiceDifferentiableError(ValueError):
    """The measured loss cannot be differentiated twice through some layer."""


def _flows(tensor):
    dtype = tensor.dtype
    return dtype.is_floating or dtype.is_complex or dtype in (tf.resource, tf.variant)


def ancestors(tensors):
    """Operations the tensors depend on through floating-point (or resource) edges."""
    seen = set()
    stack = [t.op for t in tensors if t is not None and hasattr(t, "op")]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        if op.type in _CONSTANT_OPS:
            continue
        stack.extend(t.op for t in op.inputs if _flows(t))
    return seen


def _external(graph, tensor):
    """The eager tensor a function-graph placeholder captures, through nested graphs."""
    while graph is not None and hasattr(graph, "captures"):
        outer = {id(internal): external for external, internal in graph.captures}
        tensor = outer.get(id(tensor))
        if tensor is None or not hasattr(tensor, "graph") or tensor.graph is not getattr(
                graph, "outer_graph", None):
            return tensor
        graph = graph.outer_graph
    return tensor


def used_variables(variables, ops):
    """Indices of `variables` whose handles feed any of `ops` (in the current graph)."""
    graph = tf.compat.v1.get_default_graph()
    handles = {}
    for i, variable in enumerate(variables):
        try:
            handles[id(variable.handle)] = i
        except (AttributeError, TypeError, ValueError):  # e.g. a distributed variable
            continue
    used = {}
    for op in ops:
        if op.type != "Placeholder" or op.outputs[0].dtype != tf.resource:
            continue
        external = _external(graph, op.outputs[0])
        if external is not None and id(external) in handles:
            used.setdefault(handles[id(external)], []).append(op)
    return used


def _gradient_function(op):
    """`(has_gradient, reason)` for one operation, by TensorFlow's registry."""
    if op.type == "PreventGradient":
        return False, "its gradient is explicitly disabled"
    try:
        from tensorflow.python.framework import ops as tf_ops

        function = tf_ops.get_gradient_function(op)
    except LookupError:
        return False, "TensorFlow has no gradient for it"
    except Exception:  # noqa: BLE001 - diagnostics only; never hide the real error
        return True, ""
    if function is None and op.inputs and op.type not in _CONSTANT_OPS:
        return False, "TensorFlow declares it not differentiable"
    return True, ""


def culprits(ops):
    """Operations among `ops` that block gradients, as `(op, reason)` pairs."""
    found = []
    for op in ops:
        if not any(_flows(t) for t in op.inputs):
            continue
        ok, reason = _gradient_function(op)
        if not ok:
            found.append((op, reason))
        elif op.type in _STEP_OPS:
            found.append((op, "its gradient is zero or undefined (a step function)"))
    return found


def layer_of(model, op_name):
    """Best guess of the layer that created the operation named `op_name`.

    TensorFlow makes name scopes unique inside a graph (a layer `dense` may
    run in scope `dense_1`), so a scope component matches a layer name
    exactly or after removing `_N` suffixes; the error messages also give the
    operation's full name.
    """
    names = {layer.name for layer in _layers(model)}
    parts = op_name.split("/")[:-1]
    for part in reversed(parts):
        candidate = part
        while True:
            if candidate in names:
                return candidate
            stripped = _SUFFIX.sub("", candidate)
            if stripped == candidate:
                break
            candidate = stripped
    return None


def _layers(model):
    return [layer for layer in internals.flatten_layers(model) if layer is not model]


def _variable_owner(variable):
    path = getattr(variable, "path", None) or getattr(variable, "name", "")
    parts = path.split("/")
    return parts[-2] if len(parts) > 1 else path


def _describe(model, pairs):
    items = []
    for op, reason in pairs:
        layer = layer_of(model, op.name)
        where = f" in layer '{layer}'" if layer else ""
        items.append(f"operation {op.type} ('{op.name}'){where}: {reason}")
    return "; ".join(dict.fromkeys(items))


def check_first_order(model, variables, loss, grads):
    """The error to raise if the loss depends on a variable it has no gradient for.

    Runs while a function is traced; it returns the error rather than
    raising it, because TensorFlow would re-wrap an exception raised during
    tracing. The caller raises it after the call.

    Args:
        model: The measured Keras model (for layer names).
        variables: The differentiated variables.
        loss: The scalar loss tensor (symbolic, in the graph being traced).
        grads: The raw gradients, `None` where TensorFlow found no path.

    Returns:
        A `NotTwiceDifferentiableError`, or None when all is well.
    """
    missing = [i for i, g in enumerate(grads) if g is None]
    if not missing:
        return None
    ops = ancestors([loss])
    used = used_variables([variables[i] for i in missing], ops)
    if not used:
        return None
    blocked = [variables[missing[i]] for i in sorted(used)]
    between = _between(ops, [op for group in used.values() for op in group])
    return _error(model, blocked, culprits(between), "the loss", "first")


def check_second_order(model, variables, targets, second, per_target):
    """The error to raise if a gradient depends on variables it has no derivative for.

    Args:
        model: The measured Keras model.
        variables: The differentiated variables.
        targets: The first-order gradient tensors (or their inner product
            with the tangents, a list of one tensor).
        second: The second-order results: per target (`per_target=True`,
            forward mode: `None` where target i depends on no variable) or
            per variable (double backward: `None` where the targets do not
            depend on variable j).
        per_target: Which of the two layouts `second` has.

    Returns:
        A `NotTwiceDifferentiableError`, or None when all is well.
    """
    if per_target:
        suspects = [t for t, s in zip(targets, second) if s is None and t is not None]
        if not suspects:
            return None
        ops = ancestors(suspects)
        used = used_variables(variables, ops)
        blocked_indices = sorted(used)
    else:
        missing = [j for j, s in enumerate(second) if s is None]
        if not missing:
            return None
        ops = ancestors(targets)
        used_missing = used_variables([variables[j] for j in missing], ops)
        used = {missing[k]: v for k, v in used_missing.items()}
        blocked_indices = sorted(used)
    if not blocked_indices:
        return None
    blocked = [variables[i] for i in blocked_indices]
    between = _between(ops, [op for i in blocked_indices for op in used[i]])
    return _error(model, blocked, culprits(between), "the gradient", "second")


def explain_failure(model, error, targets, where):
    """A `NotTwiceDifferentiableError` for TensorFlow's "no gradient" `LookupError`.

    Args:
        model: The measured Keras model.
        error: The `LookupError` raised while differentiating.
        targets: The tensors computed before the failure (loss, gradients).
        where: What was computing, e.g. "with hvp_method='double_backward'".
    """
    ops = ancestors([t for t in targets if t is not None])
    found = culprits(ops)
    custom = [op for op in ops if _is_custom_gradient(op)]
    detail = _describe(model, found) if found else ""
    layers = sorted({layer_of(model, op.name) for op in custom} - {None})
    if layers:
        detail += ("; " if detail else "") + (
            f"layer(s) {layers} define a custom gradient, which may not be "
            "differentiable itself")
    return NotTwiceDifferentiableError(
        f"The Hessian of the loss of model '{model.name}' cannot be computed "
        f"{where}: TensorFlow cannot differentiate it twice "
        f"({error}). {detail or 'No layer could be singled out.'}"
    )


def _is_custom_gradient(op):
    try:
        return op.type == "IdentityN" and bool(op.get_attr("_gradient_op_type"))
    except (ValueError, TypeError):
        return False


def _between(ops, sources):
    """Operations of `ops` reachable from `sources` through consumers."""
    inside = set(ops)
    seen = set()
    stack = list(sources)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        for out in op.outputs:
            stack.extend(c for c in out.consumers() if c in inside)
    return seen


def _error(model, blocked, found, what, order):
    owners = sorted({_variable_owner(v) for v in blocked})
    names = [getattr(v, "path", None) or v.name for v in blocked]
    cause = _describe(model, found) if found else (
        "the responsible operation could not be located")
    return NotTwiceDifferentiableError(
        f"The Hessian of the loss of model '{model.name}' cannot be computed: "
        f"{what} depends on the variables {names} (layer(s) {owners}), but "
        f"TensorFlow cannot form its {order} derivative with respect to them, "
        f"so their Hessian entries would be silently zero. Cause: {cause}. "
        "Replace the operation by a differentiable one, or freeze these "
        "variables (trainable=False) to measure the Hessian of the others."
    )
