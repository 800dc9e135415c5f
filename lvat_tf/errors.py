"""User-facing configuration errors (ground floor: imports nothing from lvat_tf).

Every layer raises :class:`ConfigError` for a bad flag value; ``lvat_tf.config``
re-exports it, so ``lvat_tf.config.ConfigError`` is the same class.
"""


class ConfigError(ValueError):
    """A user-facing configuration error; ``str(e)`` is a one-line message."""

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"--{flag}: {message}")
