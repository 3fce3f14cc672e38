"""`keras-flat landscape`: plots and tables of a saved model's loss landscape."""

import os

import numpy as np

DIRECTION_CHOICES = ("random", "eigen")


def add_arguments(parser):
    """The options of `keras-flat landscape`."""
    parser.add_argument("model", metavar="MODEL",
                        help="A saved Keras model (.keras), compiled with its loss or see --loss.")
    parser.add_argument("--data", required=True, metavar="FILE.npz",
                        help="NumPy .npz file with the inputs and targets (arrays 'x' and 'y' "
                             "unless --x-key/--y-key say otherwise).")
    parser.add_argument("--directions", default="random", choices=DIRECTION_CHOICES,
                        help="'random': filter-normalised random directions (Li et al. 2018); "
                             "'eigen': the top two Hessian eigenvectors (unit length, so the "
                             "axes are distances). Default: random.")
    parser.add_argument("--out", default="keras_flat_landscape", metavar="DIR",
                        help="Output directory. Default: ./keras_flat_landscape.")
    parser.add_argument("--extent", type=_positive_float, default=1.0,
                        help="Largest coefficient along each direction. Default: 1.0.")
    parser.add_argument("--resolution", type=_int_at_least(2), default=21,
                        help="Points per axis of the 2D surface. Default: 21.")
    parser.add_argument("--resolution-1d", type=_int_at_least(2), default=51,
                        help="Points of the 1D surface. Default: 51.")
    parser.add_argument("--max-examples", type=_int_at_least(1), default=1024,
                        help="Use the first this many examples of the data. Default: 1024.")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=256,
                        help="Examples per batch of the evaluation. Default: 256.")
    parser.add_argument("--x-key", default="x", help="Name of the inputs in the .npz. Default: x.")
    parser.add_argument("--y-key", default="y", help="Name of the targets in the .npz. Default: y.")
    parser.add_argument("--loss", default=None,
                        help="A Keras loss name (e.g. mse) for a model saved without a "
                             "compiled loss.")
    parser.add_argument("--seed", type=_int_at_least(0), default=0,
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


def _positive_float(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _int_at_least(minimum):
    import argparse

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


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
    for option, key in (("--x-key", args.x_key), ("--y-key", args.y_key)):
        if key not in arrays:
            parser.error(f"argument {option}: {args.data!r} has no array {key!r}; it holds "
                         f"{sorted(arrays)}")
    x, y = arrays[args.x_key], arrays[args.y_key]
    if len(x) != len(y) or len(x) == 0:
        parser.error(f"argument --data: arrays {args.x_key!r} and {args.y_key!r} must hold "
                     f"the same positive number of examples; they hold {len(x)} and {len(y)}")
    x, y = x[:args.max_examples], y[:args.max_examples]
    if not model.built:
        parser.error(f"argument MODEL: the model in {args.model!r} has not been built")
    try:
        model(x[:1], training=False)
    except Exception as error:  # noqa: BLE001
        parser.error(f"argument --data: the model cannot run on {args.x_key!r} of shape "
                     f"{x.shape}: {type(error).__name__}: {error}")
    return model, (x, y)


def run(args, parser):
    """Runs `keras-flat landscape`; returns the paths it wrote."""
    from keras_flat import landscape

    model, data = load_inputs(args, parser)
    options = {"training": args.training, "batch_size": args.batch_size}
    evaluator = landscape.Evaluator(model, data, metrics=args.metrics, **options)
    if args.directions == "random":
        directions = landscape.random_directions(
            model, k=2, seed=args.seed, include_biases=args.include_biases,
            include_normalization=args.include_normalization)
    else:
        directions = landscape.eigen_directions(model, data, k=2, seed=args.seed,
                                                max_iterations=100, **options)
    line = landscape.surface_1d(evaluator, None, directions, extent=args.extent,
                                resolution=args.resolution_1d)
    plane = landscape.surface_2d(evaluator, None, directions, extent=args.extent,
                                 resolution=args.resolution)
    os.makedirs(args.out, exist_ok=True)
    name = os.path.splitext(os.path.basename(args.model))[0]
    paths = [
        line.to_csv(os.path.join(args.out, "landscape_1d.csv")),
        plane.to_csv(os.path.join(args.out, "landscape_2d.csv")),
    ]
    landscape.plot_1d(line, os.path.join(args.out, "landscape_1d.png"), log_scale=args.log_scale,
                      title=f"{name}: {args.directions} direction")
    landscape.plot_contour(plane, os.path.join(args.out, "landscape_2d.png"),
                           log_scale=args.log_scale, title=f"{name}: {args.directions} directions")
    paths += [os.path.join(args.out, "landscape_1d.png"),
              os.path.join(args.out, "landscape_2d.png")]
    centre = float(plane.loss[np.argmin(np.abs(plane.betas)), np.argmin(np.abs(plane.alphas))])
    print(f"Loss at the weights: {centre:.6g} on {len(data[0])} examples; "
          f"over the plane: {np.nanmin(plane.loss):.6g} to {np.nanmax(plane.loss):.6g}.")
    if directions.kind == "eigen":
        print(f"Top Hessian eigenvalues: {', '.join(f'{v:.6g}' for v in directions.values)}.")
    for path in paths:
        print(f"Wrote {path}")
    return paths
