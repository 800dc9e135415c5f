"""Run a recipe's methods on the same budget and tabulate test error and time.

    python run_scripts/reproduce.py --recipe=mnist100 --output_dir=runs/reproduce
    python run_scripts/reproduce.py --recipe=mnist100 --variants=vat,vat_exact --num_epochs=10
    python run_scripts/reproduce.py --recipe=mnist100_4k --seeds=5 --dataset_seeds=1,2

Each variant is a full train.py run (resumable) in OUTPUT_DIR/<recipe>/<variant>
(several seeds: OUTPUT_DIR/<recipe>/<variant>/seed<S>-data<D>), mean ± std per variant;
the table goes to stdout and OUTPUT_DIR/<recipe>/summary.{md,json}, followed by
each variant's test error minus that of the recipe's references (--paired_with)
seed by seed: mean ± std of the differences and in how many pairs it is lower. Rows of
variants not run this time are kept from an earlier summary of the same budget.
A recipe's shared generative models are trained first into
OUTPUT_DIR/<recipe>/generative/<kind> (with their quality report).
Recipes with robustness attacks (or --robustness=fgsm,l2) then evaluate every
finished variant under attack: OUTPUT_DIR/<recipe>/robustness_<attack>.{json,png}
overlay the variants, and Lenet++ recipes add embedding_<variant>.png.
"""
import os

import _common  # noqa: F401
from absl import app, flags

from lvat_tf.recipes import BFLOAT16_MODES, DEFAULT_BFLOAT16  # light: no TensorFlow import

flags.DEFINE_string("recipe", "mnist100", "Recipe name (lvat_tf/recipes.py).")
flags.DEFINE_list("variants", None, "Subset of the recipe's variants (default: all).")
flags.DEFINE_string("output_dir", "runs/reproduce", "Where the runs and the summary go.")
flags.DEFINE_string("data_dir", None, "Data directory (default: ../shared/data/<dataset> when "
                    "present, else the dataset's default).")
flags.DEFINE_integer("num_epochs", None, "Override the recipe's epochs.")
flags.DEFINE_integer("epoch_decay_start", None, "Override the recipe's decay start.")
flags.DEFINE_integer("num_iter_per_epoch", None, "Override the recipe's updates per epoch.")
flags.DEFINE_integer("seed", None, "Override the recipe's seed (the first of --seeds).")
flags.DEFINE_integer("seeds", 1, "Runs per variant with seeds SEED, SEED+1, ... (same labeled "
                     "subset); the table reports mean ± std and every run.")
flags.DEFINE_list("dataset_seeds", None, "Labeled-subset draws (--dataset_seed values) to run "
                  "each seed on (default: the recipe's).")
flags.DEFINE_list("robustness", None, "Attacks (fgsm, l2) to evaluate the finished variants with "
                  "(default: the recipe's; 'none' skips).")
flags.DEFINE_integer("robustness_examples", 0, "Test examples per robustness evaluation (0 = all).")
flags.DEFINE_list("paired_with", None, "Variants every other row is compared with seed by seed "
                  "(same seed and labeled subset; the table's 'Paired by seed' part; default: "
                  "the recipe's references, e.g. baseline,vat).")
flags.DEFINE_enum("bfloat16", DEFAULT_BFLOAT16, list(BFLOAT16_MODES), "Run a variant's bfloat16 twin "
                  "(the same run under --mixed_precision, listed in the recipe only where seeds "
                  "showed it as accurate) in its place: auto = on CPUs with AMX (logged), on = "
                  "anywhere, off = the variants as named.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf import experiments
    from lvat_tf.config import ConfigError
    from lvat_tf.recipes import RECIPES

    if FLAGS.recipe not in RECIPES:
        raise ConfigError("recipe", f"unknown recipe {FLAGS.recipe!r}; expected one of "
                          + "|".join(sorted(RECIPES)))
    recipe = RECIPES[FLAGS.recipe]
    overrides = {k: FLAGS[k].value for k in ("num_epochs", "epoch_decay_start",
                                             "num_iter_per_epoch", "seed")
                 if FLAGS[k].value is not None}
    data_dir = FLAGS.data_dir
    shared = os.path.join(os.path.dirname(_common._ROOT), "shared", "data",
                          recipe.base["dataset"])
    if not data_dir and os.path.isdir(shared):
        data_dir = shared
    try:
        dataset_seeds = [int(d) for d in FLAGS.dataset_seeds] if FLAGS.dataset_seeds else None
    except ValueError:
        raise ConfigError("dataset_seeds", f"expected integers, got "
                          f"{','.join(FLAGS.dataset_seeds)}") from None
    attacks = None if FLAGS.robustness is None else [a for a in FLAGS.robustness if a != "none"]
    table, _ = experiments.run_recipe(
        recipe, FLAGS.output_dir, variants=FLAGS.variants, overrides=overrides,
        num_seeds=FLAGS.seeds, dataset_seeds=dataset_seeds, data_dir=data_dir,
        attacks=attacks, robustness_examples=FLAGS.robustness_examples,
        paired_with=FLAGS.paired_with, bfloat16=FLAGS.bfloat16)
    print(table)


if __name__ == "__main__":
    app.run(_common.entry_point(main))
