"""Reproduce an upstream golden-value fixture with the port.

    python run_scripts/check_upstream.py --fixture=../shared/fixtures/upstream/vat_tf_conv_large.npz \
        [--output=OUT.npz]

Computes the port's outputs from the fixture's inputs, settings and weights
alone, writes them (fixture key names + loss_at_r_given) to --output, prints
the comparison when the fixture holds expected outputs, and exits 1 when any
check is outside the tolerances of the fixtures' README.
"""
import os

import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_string("fixture", None, "Path of an upstream fixture .npz.")
flags.DEFINE_string("output", None, "Where to write the port's outputs (.npz).")
flags.DEFINE_enum("power_iteration", "finite_difference", ["finite_difference", "exact"],
                  "How the port computes the direction (upstream: finite_difference).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.fixture:
        _common.fail("--fixture: the path of an upstream fixture .npz is required")
    if not os.path.isfile(FLAGS.fixture):
        _common.fail(f"--fixture: {FLAGS.fixture} does not exist")
    import numpy as np

    from lvat_tf.upstream import fixtures, names

    try:
        kind, out, checks = fixtures.check_fixture(FLAGS.fixture, FLAGS.power_iteration)
    except (ValueError, KeyError, OSError, names.UpstreamWeightsError) as e:
        _common.fail(f"--fixture: {FLAGS.fixture}: {str(e).splitlines()[0]}")
    if FLAGS.output:
        np.savez(FLAGS.output, **{k: v for k, v in out.items() if k != 'note'})
    note = out.pop("note", None)
    print(f"fixture {FLAGS.fixture} ({kind}), power iteration {FLAGS.power_iteration}")
    if note:
        print(f"  note: {note}")
    for c in checks:
        print("  " + str(c))
    bad = [c for c in checks if not c.ok]
    if not checks:
        print("no expected outputs in the fixture: outputs written, nothing compared")
    elif bad:
        _common.fail(f"{len(bad)} of {len(checks)} checks outside tolerance")
    else:
        print(f"all {len(checks)} checks within tolerance")


if __name__ == "__main__":
    app.run(main)
