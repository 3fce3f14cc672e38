"""The `keras-flat` application: command line, demo and its datasets."""
