"""`python -m keras_flat`: the `keras-flat` command line."""

import sys

from keras_flat.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
