"""`keras-flat landscape`: plots and tables of a saved model's loss landscape."""

import os

import numpy as np

from keras_flat.app.cli_arguments import add_renamed_flag
from keras_flat.app.cli_arguments import int_at_least
from keras_flat.app.cli_arguments import positive_float

DIRECTION_CHOICES = ("random", "eigen")


def add_arguments(parser):
    """The options of `keras-flat landscape`."""
    parser.add_argument("model", metavar="MODEL",
                        help="A saved Keras model (.keras), compiled with its loss or see --loss.")
    parser.add_argument("--data", required=True, metavar="FILE.npz",
                        help="NumPy .npz file with the inputs and targets: arrays 'x' and 'y' "
                             "for a model with one input and one output. A model with several "
                             "inputs takes one array per input, 'x_<input name>' or 'x0', "
                             "'x1', ... in the order of its inputs; several outputs likewise "
                             "'y_<output name>' or 'y0', 'y1', ... (or name them with "
                             "--x-key/--y-key).")
    parser.add_argument("--directions", default="random", choices=DIRECTION_CHOICES,
                        help="'random': filter-normalised random directions (Li et al. 2018); "
                             "'eigen': the top two Hessian eigenvectors (unit length, so the "
                             "axes are distances). Default: random.")
    parser.add_argument("--output-dir", default="keras_flat_landscape", metavar="DIR",
                        help="Where to write the plots and CSV files. "
                             "Default: ./keras_flat_landscape.")
    add_renamed_flag(parser, "--out", "--output-dir")
    parser.add_argument("--extent", type=positive_float, default=1.0,
                        help="Largest coefficient along each direction. Default: 1.0.")
    parser.add_argument("--resolution", type=int_at_least(2), default=21,
                        help="Points per axis of the 2D surface. Default: 21.")
    parser.add_argument("--resolution-1d", type=int_at_least(2), default=51,
                        help="Points of the 1D surface. Default: 51.")
    parser.add_argument("--max-examples", type=int_at_least(1), default=1024,
                        help="Use the first this many examples of the data. Default: 1024.")
    parser.add_argument("--batch-size", type=int_at_least(1), default=256,
                        help="Examples per batch of the evaluation. Default: 256.")
    parser.add_argument("--x-key", action="append", metavar="KEY",
                        help="Name of the inputs in the .npz; repeat it once per input of a "
                             "model with several, in the order of its inputs. Default: see "
                             "--data.")
    parser.add_argument("--y-key", action="append", metavar="KEY",
                        help="Name of the targets in the .npz; repeat it once per output of a "
                             "model with several, in the order of its outputs. Default: see "
                             "--data.")
    parser.add_argument("--loss", default=None,
                        help="A Keras loss name (e.g. mse) for a model saved without a "
                             "compiled loss.")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="Seed of the random directions (and of Lanczos). Default: 0.")
    parser.add_argument("--include-biases", action="store_true",
                        help="Random directions also move biases (zero by default).")
    parser.add_argument("--include-normalization", action="store_true",
                        help="Random directions also move normalisation layers' scales and "
                             "offsets (zero by default).")
    parser.add_argument("--training", action="store_true",
                        help="Evaluate with layers in training mode (BatchNorm batch "
                             "statistics). Default: inference mode.")
    parser.add_argument("--metrics", action="store_true",
                        help="Also compute the compiled metrics (columns of the CSV files).")
    parser.add_argument("--log-scale", action="store_true",
                        help="Logarithmic loss axis and contour levels.")


def load_inputs(args, parser):
    """Loads and checks the model and data; errors name the argument and value."""
    import keras

    import keras_flat  # noqa: F401  (registers FlatMinimaModel for loading)

    if not os.path.isfile(args.model):
        parser.error(f"argument MODEL: no such file: {args.model!r}")
    try:
        model = keras.models.load_model(args.model)
    except Exception as error:  # noqa: BLE001 - any failure is reported the same way.
        parser.error(f"argument MODEL: could not load {args.model!r} as a Keras model: "
                     f"{type(error).__name__}: {error}")
    if args.loss is not None:
        try:
            loss = keras.losses.get(args.loss)
        except (ValueError, TypeError):
            parser.error(f"argument --loss: unknown Keras loss {args.loss!r}")
        model.compile(loss=loss)
    elif getattr(model, "loss", None) is None:  # Set by compile.
        parser.error(f"argument MODEL: {args.model!r} was saved without a compiled loss; "
                     "pass --loss (e.g. --loss mse)")
    if not os.path.isfile(args.data):
        parser.error(f"argument --data: no such file: {args.data!r}")
    try:
        with np.load(args.data, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # noqa: BLE001
        parser.error(f"argument --data: could not read {args.data!r} as a NumPy .npz "
                     f"file: {type(error).__name__}: {error}")
    x_keys, x = _arrays(arrays, args.x_key, _structure(model, "input"), "x", args.data, parser)
    y_keys, y = _arrays(arrays, args.y_key, _structure(model, "output"), "y", args.data, parser)
    sizes = {key: len(arrays[key]) for key in x_keys + y_keys}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        parser.error(f"argument --data: arrays {', '.join(map(repr, sizes))} must hold the "
                     "same positive number of examples; they hold "
                     f"{', '.join(map(str, sizes.values()))}")
    x, y = (keras.tree.map_structure(lambda a: a[:args.max_examples], t) for t in (x, y))
    if not model.built:
        parser.error(f"argument MODEL: the model in {args.model!r} has not been built")
    try:
        model(keras.tree.map_structure(lambda a: a[:1], x), training=False)
    except Exception as error:  # noqa: BLE001
        shapes = ", ".join(f"{key!r} of shape {arrays[key].shape}" for key in x_keys)
        parser.error(f"argument --data: the model cannot run on {shapes}: "
                     f"{type(error).__name__}: {error}")
    return model, (x, y)


def _structure(model, kind):
    """The names of the model's inputs or outputs in order, and whether it takes a dict.

    `(None, False)` for a model that does not say (subclassed models).
    """
    import keras

    try:
        structure = model.input if kind == "input" else model.output
    except (AttributeError, ValueError):
        return None, False
    if isinstance(structure, dict):
        return list(structure), True
    tensors = keras.tree.flatten(structure)
    names = getattr(model, "output_names", None) if kind == "output" else None
    return list(names or [t.name for t in tensors]), False


def _arrays(arrays, keys, structure, letter, path, parser):
    """The keys and the array, list or dict of arrays a model's inputs or outputs take.

    Args:
        arrays: The `.npz` file's arrays by name.
        keys: The keys the user gave (`--x-key`/`--y-key`, in order) or None.
        structure: `_structure(model, "input")` or `(model, "output")`.
        letter: `"x"` or `"y"`.
        path: The `.npz` file, for messages.
        parser: Reports errors.
    """
    names, as_dict = structure
    option, kind = f"--{letter}-key", "inputs" if letter == "x" else "outputs"
    several = names is not None and len(names) > 1
    listed = f"{len(names) if names else 1} {kind} ({', '.join(map(repr, names or []))})"
    if keys and names is not None and len(keys) != len(names):
        parser.error(f"argument {option}: the model has {listed} but {len(keys)} "
                     f"{option} {'was' if len(keys) == 1 else 'were'} given "
                     f"({', '.join(map(repr, keys))}); give {option} once per {kind[:-1]}, "
                     "in this order")
    if not keys and several:
        candidates = ([f"{letter}_{name}" for name in names],
                      [f"{letter}{i}" for i in range(len(names))])
        keys = next((c for c in candidates if all(k in arrays for k in c)), None)
        if keys is None:
            parser.error(f"argument --data: the model has {listed}; {path!r} needs one array "
                         f"per {kind[:-1]}, named {', '.join(map(repr, candidates[0]))} or "
                         f"{', '.join(map(repr, candidates[1]))} (or give {option} once per "
                         f"{kind[:-1]}, in this order); it holds {sorted(arrays)}")
    keys = keys or [letter]
    for key in keys:
        if key not in arrays:
            parser.error(f"argument {option}: {path!r} has no array {key!r}; it holds "
                         f"{sorted(arrays)}")
    values = [arrays[key] for key in keys]
    if len(values) == 1 and not several:
        return keys, values[0]
    return keys, dict(zip(names, values)) if as_dict else values


def run(args, parser):
    """Runs `keras-flat landscape`; returns the paths it wrote."""
    import keras

    from keras_flat import landscape

    model, data = load_inputs(args, parser)
    options = {"training": args.training, "batch_size": args.batch_size}
    evaluator = landscape.Evaluator(model, data, metrics=args.metrics, **options)
    if args.directions == "random":
        directions = landscape.random_directions(
            model, num_directions=2, seed=args.seed, include_biases=args.include_biases,
            include_normalization=args.include_normalization)
    else:
        directions = landscape.eigen_directions(model, data, num_directions=2, seed=args.seed,
                                                max_iterations=100, **options)
    line = landscape.surface_1d(evaluator, None, directions, extent=args.extent,
                                resolution=args.resolution_1d)
    plane = landscape.surface_2d(evaluator, None, directions, extent=args.extent,
                                 resolution=args.resolution)
    os.makedirs(args.output_dir, exist_ok=True)
    name = os.path.splitext(os.path.basename(args.model))[0]
    paths = [
        line.to_csv(os.path.join(args.output_dir, "landscape_1d.csv")),
        plane.to_csv(os.path.join(args.output_dir, "landscape_2d.csv")),
    ]
    landscape.plot_1d(line, os.path.join(args.output_dir, "landscape_1d.png"),
                      log_scale=args.log_scale, title=f"{name}: {args.directions} direction")
    landscape.plot_contour(plane, os.path.join(args.output_dir, "landscape_2d.png"),
                           log_scale=args.log_scale, title=f"{name}: {args.directions} directions")
    paths += [os.path.join(args.output_dir, "landscape_1d.png"),
              os.path.join(args.output_dir, "landscape_2d.png")]
    centre = float(plane.loss[np.argmin(np.abs(plane.betas)), np.argmin(np.abs(plane.alphas))])
    examples = len(keras.tree.flatten(data[0])[0])
    print(f"Loss at the weights: {centre:.6g} on {examples} examples; "
          f"over the plane: {np.nanmin(plane.loss):.6g} to {np.nanmax(plane.loss):.6g}.")
    if directions.kind == "eigen":
        print(f"Top Hessian eigenvalues: {', '.join(f'{v:.6g}' for v in directions.values)}.")
    for path in paths:
        print(f"Wrote {path}")
    return paths
