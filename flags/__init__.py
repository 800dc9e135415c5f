"""absl flag definitions mirroring vat_tf / LVAT, and their conversion to a Config.

Only this package and ``run_scripts/`` read absl FLAGS.
"""
from flags.definitions import (DATASET_DEPENDENT, UPSTREAM_DEFAULTS, config_from_flags,
                               define_flags)

__all__ = ["define_flags", "config_from_flags", "UPSTREAM_DEFAULTS", "DATASET_DEPENDENT"]
