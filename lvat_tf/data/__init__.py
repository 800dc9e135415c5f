"""Datasets: raw canonical files, tfds, the embedded sklearn digits; SSL splits; pipelines."""

class DataError(ValueError):
    """A user-facing data error; ``str(e)`` is one line naming the flag or file."""
