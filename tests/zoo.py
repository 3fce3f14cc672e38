"""A zoo of small but real architectures, shared by the tests that run every
algorithm and every flatness measurement on them, and the independent
references those tests compare against.

Each `ZooModel` builds a fresh uncompiled Keras model (with Dropout at the
given rate, 0 for exact reference steps), makes a learnable data set, and
knows its compiled loss. The references here use only Keras and TensorFlow
(`model.stateless_call`, Keras losses, `tf.GradientTape`) and NumPy, never
keras_flat.

The training tests (tests/test_zoo_training.py) run every rule of
`keras_flat.algorithms.registry`, with the arguments of
tests/reference/arguments.py. `ALGORITHMS` is the list the README's table
names (`readme_table()`), and `algorithm()` builds a rule with
`ALGORITHM_ARGS`, for the other zoo tests that train with one.
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

import keras_flat

# The rules the README's table names, and the arguments `algorithm()` gives them.
ALGORITHMS = ("none", "sam", "asam", "rs", "sa")
ALGORITHM_ARGS = {
    "sam": {"rho": 0.05},
    # ASAM's default radius 0.5 (its paper's CIFAR setting) barely trains the
    # transformer at Adam 0.02 within check_training's five epochs (its
    # defaults' row in benchmarks/defaults.py shows the same on a larger run).
    "asam": {"rho": 0.2, "eta": 0.01},
    "rs": {"rho": 0.05},
    "sa": {"rho": 0.05},
}


def algorithm(name):
    """A fresh instance of the algorithm `name` with the zoo's arguments."""
    return keras_flat.algorithms.get(name, **ALGORITHM_ARGS.get(name, {}))


L = keras.layers


def _seeded(seed):
    return {"kernel_initializer": keras.initializers.GlorotUniform(seed=seed)}


def _bias(seed):
    return keras.initializers.RandomNormal(stddev=0.2, seed=seed)


def resnet_block(dropout=0.0, classes=3):
    """A ResNet basic block: conv-BN-ReLU-conv-BN plus a 1x1 projection skip."""
    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", bias_initializer=_bias(1), **_seeded(0),
                 name="conv_a")(inputs)
    h = L.BatchNormalization(name="bn_a")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(4, 3, padding="same", use_bias=False, **_seeded(2), name="conv_b")(h)
    h = L.BatchNormalization(name="bn_b")(h)
    skip = L.Conv2D(4, 1, use_bias=False, **_seeded(3), name="projection")(inputs)
    h = L.ReLU()(L.Add()([h, skip]))
    h = L.MaxPooling2D(2)(h)
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dropout(dropout)(h)
    outputs = L.Dense(classes, **_seeded(4), name="logits")(h)
    return keras.Model(inputs, outputs, name="resnet_block")


def mobilenet(dropout=0.0, classes=3):
    """keras.applications.MobileNetV3Small at 32x32, random weights."""
    return keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=classes, dropout_rate=dropout,
        classifier_activation=None, include_preprocessing=True)


VOCAB, SEQ = 6, 5


def transformer(dropout=0.0, classes=3, dim=4, heads=2):
    """A transformer encoder block on token inputs.

    Token and position embeddings, multi-head self-attention with a
    residual connection and LayerNorm, a GELU MLP with a residual
    connection and LayerNorm, average pooling and a classifier.
    """
    tokens = keras.Input((SEQ,), dtype="int32")
    h = L.Embedding(VOCAB, dim, embeddings_initializer=keras.initializers.RandomNormal(
        stddev=0.5, seed=0), name="tokens")(tokens)
    position_ids = tokens * 0 + keras.ops.arange(SEQ, dtype="int32")
    positions = L.Embedding(SEQ, dim, embeddings_initializer=keras.initializers.RandomNormal(
        stddev=0.5, seed=1), name="positions")(position_ids)
    h = h + positions
    attention = L.MultiHeadAttention(
        heads, dim // heads, dropout=dropout, name="attention",
        kernel_initializer=keras.initializers.GlorotUniform(seed=2),
        bias_initializer=_bias(3))(h, h)
    h = L.LayerNormalization(name="norm_1")(h + L.Dropout(dropout)(attention))
    mlp = L.Dense(6, activation="gelu", bias_initializer=_bias(5), **_seeded(4),
                  name="mlp_in")(h)
    mlp = L.Dense(dim, bias_initializer=_bias(7), **_seeded(6), name="mlp_out")(mlp)
    h = L.LayerNormalization(name="norm_2")(h + L.Dropout(dropout)(mlp))
    h = L.GlobalAveragePooling1D()(h)
    outputs = L.Dense(classes, **_seeded(8), name="logits")(h)
    return keras.Model(tokens, outputs, name="transformer")


def _recurrent_text(cell, name, dropout, classes):
    """Token embedding, a recurrent layer of type `cell`, classifier."""
    return keras.Sequential([
        keras.Input((SEQ,), dtype="int32"),
        L.Embedding(VOCAB, 4, embeddings_initializer=keras.initializers.RandomNormal(
            stddev=0.5, seed=0)),
        cell(5, kernel_initializer=keras.initializers.GlorotUniform(seed=1),
             recurrent_initializer=keras.initializers.Orthogonal(seed=2)),
        L.Dropout(dropout),
        L.Dense(classes, **_seeded(3)),
    ], name=name)


def lstm_text(dropout=0.0, classes=3):
    """Token embedding, LSTM, classifier."""
    return _recurrent_text(L.LSTM, "lstm_text", dropout, classes)


def gru_text(dropout=0.0, classes=3):
    """Token embedding, GRU, classifier."""
    return _recurrent_text(L.GRU, "gru_text", dropout, classes)


def groupnorm_cnn(dropout=0.0, classes=3):
    """Conv-GroupNorm-SiLU, depthwise conv, average pooling, RMS-scaled LayerNorm."""
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(4, 3, padding="same", bias_initializer=_bias(1), **_seeded(0), name="conv"),
        L.GroupNormalization(groups=2, name="group_norm"),
        L.Activation("silu"),
        L.DepthwiseConv2D(3, padding="same", bias_initializer=_bias(3),
                          depthwise_initializer=keras.initializers.GlorotUniform(seed=2)),
        L.AveragePooling2D(4),
        L.Flatten(),
        L.Dropout(dropout),
        L.LayerNormalization(rms_scaling=True, center=False, name="rms_norm"),
        L.Dense(classes, **_seeded(4)),
    ], name="groupnorm_cnn")


def two_outputs(dropout=0.0):
    """A shared L2-regularised trunk with a regression and a classification head."""
    inputs = keras.Input((6,))
    h = L.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-3),
                bias_initializer=_bias(1), **_seeded(0), name="trunk")(inputs)
    h = L.Dropout(dropout)(h)
    value = L.Dense(2, **_seeded(2), name="value")(h)
    label = L.Dense(3, **_seeded(3), name="label")(h)
    return keras.Model(inputs, {"value": value, "label": label}, name="two_outputs")


def frozen_backbone(dropout=0.0, classes=3):
    """A frozen Conv1D/BatchNorm backbone (trainable=False) under a trainable head."""
    backbone = keras.Sequential([
        keras.Input((8, 3)),
        L.Conv1D(4, 3, activation="relu", **_seeded(0)),
        L.BatchNormalization(),
        L.GlobalMaxPooling1D(),
        L.Dense(6, activation="tanh", **_seeded(1)),
    ], name="backbone")
    backbone.trainable = False
    inputs = keras.Input((8, 3))
    h = backbone(inputs)
    h = L.Dense(6, activation="silu", bias_initializer=_bias(3), **_seeded(2), name="head")(h)
    h = L.Dropout(dropout)(h)
    outputs = L.Dense(classes, **_seeded(4), name="logits")(h)
    model = keras.Model(inputs, outputs, name="frozen_backbone")
    # Non-trivial moving statistics in the frozen BatchNorm.
    bn = backbone.layers[1]
    bn.moving_mean.assign(np.linspace(-0.3, 0.3, 4))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 4))
    return model


def conv1d_rnn(dropout=0.0, classes=3):
    """Conv1D with SiLU, max pooling, SimpleRNN, UnitNormalization."""
    return keras.Sequential([
        keras.Input((8, 3)),
        L.Conv1D(4, 3, activation="silu", bias_initializer=_bias(1), **_seeded(0)),
        L.MaxPooling1D(2),
        L.SimpleRNN(5, kernel_initializer=keras.initializers.GlorotUniform(seed=2),
                    recurrent_initializer=keras.initializers.Orthogonal(seed=3)),
        L.Dropout(dropout),
        L.UnitNormalization(),
        L.Dense(classes, **_seeded(4)),
    ], name="conv1d_rnn")


def _teacher_labels(x, classes, seed):
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    w = np.random.default_rng(seed).normal(size=(flat.shape[1], classes))
    return np.argmax(flat @ w, axis=1).astype("int32")


def _images(shape):
    def make(n, seed=0):
        x = np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")
        return x, _teacher_labels(x, 3, 100)
    return make


def _sequences(n, seed=0):
    """Sequences of 3 features; the label is the feature with the largest mean."""
    x = np.random.default_rng(seed).normal(size=(n, 8, 3)).astype("float32")
    return x, np.argmax(x.mean(axis=1), axis=1).astype("int32")


def _tokens(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, size=(n, SEQ)).astype("int32")
    return x, (x[:, -1] % 3).astype("int32")  # The last token's class: learnable.


def _frozen_data(n, seed=0):
    """Inputs, and labels a linear teacher reads off the frozen backbone's features."""
    x = np.random.default_rng(seed).normal(size=(n, 8, 3)).astype("float32")
    backbone = frozen_backbone().get_layer("backbone")
    features = np.asarray(backbone(x, training=False))
    return x, _teacher_labels(features, 3, 102)


def _two_output_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    w = np.random.default_rng(100).normal(size=(6, 2))
    value = np.tanh(x @ w).astype("float32")
    return x, {"value": value, "label": _teacher_labels(x, 3, 101)}


_SCCE = {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}
_MSE = {"class_name": "MeanSquaredError", "config": {}}


def _make_loss(spec):
    if isinstance(spec, dict) and "class_name" not in spec:
        return {k: _make_loss(v) for k, v in spec.items()}
    loss = keras.losses.get(spec)
    assert isinstance(loss, keras.losses.Loss), "use a Loss config, not a function name"
    return loss


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One architecture of the zoo.

    Attributes:
        name: Its name in test ids and in the README table.
        build: `build(dropout)` returns a fresh, built, uncompiled model.
        data: `data(n, seed)` returns `(x, y)` with a learnable target.
        loss: The compiled loss (a Keras loss identifier, or a dict per output).
        loss_weights: Per-output loss weights, or None.
        layers: The Keras layers (and activations) it exercises.
        full_hessian: Small enough for a dense finite-difference Hessian;
            otherwise products are checked along directions (slow suite).
        batchnorm: Normalises with batch statistics in training mode.
        slow: Its training tests run in the slow suite only.
        recurrent: Has a recurrent loop, which forward-over-backward
            differentiation cannot pass.
        null_directions: `((label, training, {variable path: mask}), ...)`:
            directions that shift every input of a normalization equally,
            along which the loss is constant and H·u = 0.
        callbacks: Where the callbacks are checked on it: None, "default"
            or "slow".
    """

    name: str
    build: object
    data: object
    loss: object = dataclasses.field(default_factory=lambda: _SCCE)
    loss_weights: object = None
    layers: tuple = ()
    full_hessian: bool = True
    batchnorm: bool = False
    slow: bool = False
    recurrent: bool = False
    null_directions: tuple = ()
    callbacks: object = None

    def compile_args(self):
        args = {"loss": _make_loss(self.loss)}
        if self.loss_weights is not None:
            args["loss_weights"] = dict(self.loss_weights)
        return args

    def losses(self):
        """`[(output key or None, Keras loss object, weight)]`, as compile sees them."""
        if isinstance(self.loss, dict) and "class_name" not in self.loss:
            weights = self.loss_weights or {}
            return [(k, _make_loss(v), weights.get(k, 1.0)) for k, v in self.loss.items()]
        return [(None, _make_loss(self.loss), 1.0)]


ZOO = {
    model.name: model for model in (
        ZooModel("resnet_block", resnet_block, _images((8, 8, 3)),
                 layers=("Conv2D", "BatchNormalization", "ReLU", "Add (skip connection)",
                         "MaxPooling2D", "GlobalAveragePooling2D", "Dropout", "Dense"),
                 batchnorm=True, null_directions=(
                     ("BatchNormalization(training=True)", True,
                      {"conv_a/bias": [1.0, 0.0, 0.0, 0.0]}),)),
        ZooModel("mobilenet_v3_small", mobilenet, _images((32, 32, 3)),
                 layers=("keras.applications.MobileNetV3Small at 32x32 (Rescaling, Conv2D, "
                         "DepthwiseConv2D, BatchNormalization, hard-swish, squeeze-and-"
                         "excitation, Dropout)",),
                 full_hessian=False, batchnorm=True, slow=True),
        ZooModel("transformer", transformer, _tokens,
                 layers=("Embedding", "MultiHeadAttention", "LayerNormalization", "GELU",
                         "Dropout", "GlobalAveragePooling1D"),
                 null_directions=(("LayerNormalization", False, {
                     "attention/attention_output/bias": 1.0, "mlp_out/bias": 1.0}),),
                 callbacks="slow"),
        ZooModel("lstm_text", lstm_text, _tokens, layers=("Embedding", "LSTM", "Dropout"),
                 recurrent=True, callbacks="default"),
        ZooModel("gru_text", gru_text, _tokens, layers=("Embedding", "GRU", "Dropout"),
                 recurrent=True),
        ZooModel("groupnorm_cnn", groupnorm_cnn, _images((8, 8, 2)),
                 layers=("Conv2D", "GroupNormalization", "SiLU", "DepthwiseConv2D",
                         "AveragePooling2D", "LayerNormalization(rms_scaling=True)",
                         "Dropout"),
                 null_directions=(("GroupNormalization", False, {
                     "groupnorm_cnn/conv/bias": [1.0, 1.0, 0.0, 0.0]}),)),
        ZooModel("two_outputs", two_outputs, _two_output_data,
                 loss={"value": _MSE, "label": _SCCE},
                 loss_weights={"value": 1.0, "label": 0.5},
                 layers=("two outputs, two losses, loss_weights", "L2 regularizer",
                         "Dropout")),
        ZooModel("frozen_backbone", frozen_backbone, _frozen_data,
                 layers=("frozen backbone (trainable=False): Conv1D, BatchNormalization, "
                         "GlobalMaxPooling1D", "SiLU", "Dropout")),
        ZooModel("conv1d_rnn", conv1d_rnn, _sequences,
                 layers=("Conv1D", "SiLU", "MaxPooling1D", "SimpleRNN", "UnitNormalization",
                         "Dropout"),
                 recurrent=True),
    )
}
NAMES = tuple(ZOO)
SMALL = tuple(name for name, model in ZOO.items() if model.full_hessian)
NULL_DIRECTIONS = {label: (name, training, paths) for name, model in ZOO.items()
                   for label, training, paths in model.null_directions}


def readme_table():
    """The README's "tested layers and models" table, generated from the zoo."""
    algorithms = ", ".join(f"`{a}`" for a in ALGORITHMS)
    lines = [
        "| model | layers and features | every algorithm: step = hand-assembled "
        "reference, fit trains (Dropout on) | second order against finite differences |",
        "|---|---|---|---|",
    ]
    for name, model in ZOO.items():
        training = f"{algorithms}" + (" (slow suite)" if model.slow else "")
        if model.full_hessian:
            checks = ["exact Hessian, both HVP methods, Hutchinson, top eigenvalue"]
        else:
            checks = ["both HVP methods, inference and training mode (slow suite)"]
        if model.recurrent:
            checks.append("forward-over-backward fails with a clear error and `auto` "
                          "uses double backward")
        checks += [f"H·u = 0 along a {label} null direction"
                   for label, _, _ in model.null_directions]
        if name == "resnet_block":
            checks.append("both HVP methods with BatchNorm in training mode")
        if model.callbacks:
            checks.append("`HessianTrace` and `TopEigenvalue` callbacks"
                          + (" (slow suite)" if model.callbacks == "slow" else ""))
        lines.append(f"| `{name}` | {', '.join(model.layers)} | {training} | "
                     f"{'; '.join(checks)} |")
    return "\n".join(lines)


@contextlib.contextmanager
def float64():
    """Builds models in float64 inside the block (for finite-difference references)."""
    policy = keras.mixed_precision.global_policy()
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.mixed_precision.set_global_policy("float64")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        keras.config.set_floatx(floatx)


def build(name, dropout=0.0, dtype="float32"):
    """A fresh compiled-loss-free instance of zoo model `name`."""
    if dtype == "float64":
        with float64():
            return ZOO[name].build(dropout)
    return ZOO[name].build(dropout)


# ---- Independent references: Keras and TensorFlow primitives, and NumPy ----


def reference_loss(losses, model, trainable, x, y, sample_weight=None, training=True,
                   non_trainable=None):
    """The compiled training loss at `trainable` values, assembled by hand.

    The model runs through `model.stateless_call` (no variable changes);
    the loss is each output's Keras loss (mean over the batch, sample
    weights applied as Keras does), weighted, plus the model's
    regularization losses.

    Args:
        losses: `[(output key or None, Keras loss, weight)]`, e.g.
            `ZooModel.losses()`.
        non_trainable: Values of `model.non_trainable_variables` (default:
            their current values).
    """
    if non_trainable is None:
        non_trainable = [v.value for v in model.non_trainable_variables]
    y_pred, _, extra = model.stateless_call(trainable, non_trainable, x, training=training,
                                            return_losses=True)
    total = 0.0
    for key, loss, weight in losses:
        target = y if key is None else y[key]
        pred = y_pred if key is None else y_pred[key]
        total += weight * loss(target, pred, sample_weight=sample_weight)
    for term in extra:
        total += tf.cast(term, total.dtype)
    return total


def gradient_function(losses, model, x, y, training=True, compiled=True, non_trainable=None):
    """`grad(values, sample_weight=None) -> (loss, [gradients])` in NumPy.

    Gradients with respect to `model.trainable_variables`, by one
    `tf.GradientTape` over `reference_loss`; compiled once with
    `compiled=True` (for many calls), eager otherwise (for a few).
    `non_trainable` replaces the values of `model.non_trainable_variables`
    (default: a snapshot of their current values).
    """
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    y = tf.nest.map_structure(tf.convert_to_tensor, y)
    dtypes = [v.dtype for v in model.trainable_variables]
    # A snapshot: a training step may move BatchNorm statistics afterwards.
    if non_trainable is None:
        non_trainable = [v.numpy() for v in model.non_trainable_variables]
    non_trainable = [tf.constant(np.asarray(v), u.dtype)
                     for v, u in zip(non_trainable, model.non_trainable_variables)]

    def compute(values, sample_weight):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = reference_loss(losses, model, values, x, y, sample_weight, training,
                                  non_trainable)
        grads = tape.gradient(loss, values)
        return loss, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                      for g, v in zip(grads, values)]

    if compiled:
        compute = tf.function(compute, reduce_retracing=True)

    def grad(values, sample_weight=None):
        values = [tf.constant(np.asarray(v), d) for v, d in zip(values, dtypes)]
        if sample_weight is None:
            sample_weight = np.ones(_batch(x))
        loss, grads = compute(values, tf.constant(np.asarray(sample_weight), dtypes[0]))
        return float(loss), [np.asarray(g, np.float64) for g in grads]

    return grad


def float64_twin(model):
    """A float64 copy of a Sequential or functional model, with the same weights."""
    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    with float64():
        twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    return twin


def _batch(x):
    return int(tf.nest.flatten(x)[0].shape[0])


def weights_of(model):
    return [np.array(v, np.float64) for v in model.trainable_variables]


def flatten(parts):
    return np.concatenate([np.ravel(p) for p in parts])


def unflatten(flat, like):
    out, start = [], 0
    for p in like:
        size = int(np.prod(np.shape(p)))
        out.append(np.reshape(flat[start:start + size], np.shape(p)))
        start += size
    return out


def finite_difference_hvp(grad, weights, direction, step=1e-6):
    """H·u by central differences of the float64 gradient: (g(w+hu) - g(w-hu)) / 2h."""
    u = unflatten(np.asarray(direction, np.float64), weights)
    plus = grad([w + step * d for w, d in zip(weights, u)])[1]
    minus = grad([w - step * d for w, d in zip(weights, u)])[1]
    return (flatten(plus) - flatten(minus)) / (2 * step)


def finite_difference_hessian(grad, weights, step=1e-6):
    """The dense Hessian, column by column, by central differences (symmetrised)."""
    d = sum(int(np.prod(np.shape(w))) for w in weights)
    columns = [finite_difference_hvp(grad, weights, np.eye(d)[j], step) for j in range(d)]
    h = np.stack(columns, axis=1)
    return (h + h.T) / 2


# ---- Where an algorithm evaluated gradients inside a compiled step ----------


class DrawRecorder:
    """Records the offsets and example subsets of a training step's gradient calls.

    While `install(monkeypatch)` is in effect, every call of the gradient
    oracle's `gradient(offset, subset)` also writes its offset and subset
    indices into variables (one slot per call site of the traced step), so
    the offsets and random draws of every rule can be read back after `fit`
    and checked against a reference assembled by hand. A slot whose call sat
    in a branch that did not run stays unwritten. Subsets of any size are
    recorded.

    Args:
        variables: The trainable variables (shapes and dtypes of offsets).
        slots: Call sites to provide for.
        examples: Initial size of a recorded subset (any size is recorded).
    """

    def __init__(self, variables, slots=10, examples=1):
        self.shapes = [tuple(v.shape) for v in variables]
        self.offsets = [[tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                         for v in variables] for _ in range(slots)]
        self.has_offset = [tf.Variable(0, trainable=False) for _ in range(slots)]
        self.subsets = [tf.Variable(tf.fill([examples], -1), trainable=False,
                                    shape=tf.TensorShape([None])) for _ in range(slots)]
        self.has_subset = [tf.Variable(0, trainable=False) for _ in range(slots)]
        self.written = [tf.Variable(0, trainable=False) for _ in range(slots)]
        self.sites = 0

    def install(self, monkeypatch):
        from keras_flat.algorithms import oracle

        original = oracle.GradientOracle.gradient
        recorder = self

        def gradient(oracle_self, offset=None, subset=None):
            k = recorder.sites
            assert k < len(recorder.written), (
                f"more than {len(recorder.written)} gradient call sites: give the "
                "DrawRecorder more slots")
            recorder.sites += 1
            writes = [recorder.written[k].assign(1)]
            if offset is not None:
                assert len(offset) == len(recorder.shapes) and all(
                    tf.TensorShape(o.shape).is_compatible_with(shape)
                    for o, shape in zip(offset, recorder.shapes)), (
                    [tuple(o.shape) for o in offset], recorder.shapes)
                writes.append(recorder.has_offset[k].assign(1))
                writes += [r.assign(tf.cast(o, r.dtype))
                           for r, o in zip(recorder.offsets[k], offset)]
            if subset is not None:
                writes.append(recorder.has_subset[k].assign(1))
                writes.append(recorder.subsets[k].assign(
                    tf.reshape(tf.cast(subset.indices, tf.int32), [-1])))
            with tf.control_dependencies(writes):
                return original(oracle_self, offset=offset, subset=subset)

        monkeypatch.setattr(oracle.GradientOracle, "gradient", gradient)

    def calls(self):
        """`[(offset or None, subset indices or None)]` of the calls that ran, in order."""
        out = []
        for k in range(self.sites):
            if not int(self.written[k].numpy()):
                continue
            offset = ([np.array(v, np.float64) for v in self.offsets[k]]
                      if int(self.has_offset[k].numpy()) else None)
            subset = (np.array(self.subsets[k]) if int(self.has_subset[k].numpy())
                      else None)
            out.append((offset, subset))
        return out
