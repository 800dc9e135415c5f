"""The LVAT paper's figures (Fig. 5-8) and learning curves for finished runs, with an index.html.

    python run_scripts/analyze.py --log_dir=runs/svhn_lvat_glow --compare=runs/svhn_vat --output_dir=figs

Each run is analysed with its own method's perturbation (LVAT in the latent
space, VAT in input space) on the first --num_examples test images.
"""
import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_list("compare", [], "More finished runs (e.g. a VAT run next to an LVAT one).")
flags.DEFINE_string("output_dir", None, "Where the PNGs and index.html go.")
flags.DEFINE_integer("num_examples", 500, "Test images analysed.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf import analysis
    from lvat_tf.config import ConfigError

    _common.require(FLAGS, log_dir="a finished run directory",
                    output_dir="the directory for the figures")
    if FLAGS.num_examples < 2:
        raise ConfigError("num_examples", f"expected >= 2, got {FLAGS.num_examples}")
    written = analysis.analyze([FLAGS.log_dir] + list(FLAGS.compare), FLAGS.output_dir,
                               FLAGS.num_examples)
    print(f"wrote {', '.join(written)} and index.html to {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
