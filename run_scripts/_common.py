"""Shared plumbing of the thin entry points: import path and one-line errors."""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, _ROOT)


def user_errors():
    """The exception types that end a script with a one-line message, exit 1."""
    from lvat_tf.experiments import user_errors as library_user_errors

    return library_user_errors()


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(1)


def no_positional_args(argv) -> None:
    """absl passes leftover words in argv; our scripts take flags only."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")


def require(flag_values, **flags_and_what) -> None:
    """Raises ConfigError naming the first flag that is empty, e.g. ``require(FLAGS, log_dir=
    "a finished run directory")`` -> ``--log_dir: a finished run directory is required``."""
    from lvat_tf.errors import ConfigError

    for name, what in flags_and_what.items():
        if not flag_values[name].value:
            raise ConfigError(name, f"{what} is required")


def entry_point(body, extra_errors=()):
    """The absl ``main`` of a script: flags only, and a user error ends it with one line, exit 1.

    Args:
      body: a function of no arguments: the script's work.
      extra_errors: more exception types to report as one line (e.g. ConvertError).
    """
    def main(argv):
        no_positional_args(argv)
        try:
            body()
        except user_errors() + tuple(extra_errors) as e:
            fail(str(e))
    return main
