"""Run a recipe's methods on the same budget and tabulate test error and time.

    python run_scripts/reproduce.py --recipe=mnist100 --output_dir=runs/reproduce
    python run_scripts/reproduce.py --recipe=mnist100 --variants=vat,vat_exact --num_epochs=10
    python run_scripts/reproduce.py --recipe=mnist100_4k --seeds=5 --dataset_seeds=1,2

Each variant is a full train.py run (resumable) in OUTPUT_DIR/<recipe>/<variant>
(several seeds: OUTPUT_DIR/<recipe>/<variant>/seed<S>-data<D>), mean ± std per variant;
the table goes to stdout and OUTPUT_DIR/<recipe>/summary.{md,json}. Rows of
variants not run this time are kept from an earlier summary of the same budget.
Recipes with robustness attacks (or --robustness=fgsm,l2) then evaluate every
finished variant under attack: OUTPUT_DIR/<recipe>/robustness_<attack>.{json,png}
overlay the variants, and Lenet++ recipes add embedding_<variant>.png.
"""
import json
import os
import time

import _common  # noqa: F401
from absl import app, flags, logging

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
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from lvat_tf import experiments
    from lvat_tf.config import make_config
    from lvat_tf.recipes import RECIPES
    from lvat_tf.training import run

    if FLAGS.recipe not in RECIPES:
        _common.fail(f"--recipe: unknown recipe {FLAGS.recipe!r}; expected one of "
                     + "|".join(sorted(RECIPES)))
    recipe = RECIPES[FLAGS.recipe]
    names = [n for n, _ in recipe.variants]
    chosen = FLAGS.variants or names
    unknown = [v for v in chosen if v not in names]
    if unknown:
        _common.fail(f"--variants: unknown variant {unknown[0]!r}; expected some of "
                     + ",".join(names))
    base = dict(recipe.base)
    for k in ("num_epochs", "epoch_decay_start", "num_iter_per_epoch", "seed"):
        if FLAGS[k].value is not None:
            base[k] = FLAGS[k].value
    try:
        dataset_seeds = [int(d) for d in FLAGS.dataset_seeds] if FLAGS.dataset_seeds else None
        grid = experiments.seed_grid(base.get("seed", 1), base.get("dataset_seed", 1),
                                     FLAGS.seeds, dataset_seeds)
    except ValueError as e:
        _common.fail(f"--seeds/--dataset_seeds: {e}")
    single = len(grid) == 1 and grid[0] == (base.get("seed", 1), base.get("dataset_seed", 1))
    shared = os.path.join(os.path.dirname(_common._ROOT), "shared", "data", base["dataset"])
    if FLAGS.data_dir:
        base["data_dir"] = FLAGS.data_dir
    elif os.path.isdir(shared):
        base["data_dir"] = shared
    attacks = recipe.robustness if FLAGS.robustness is None else [
        a for a in FLAGS.robustness if a != "none"]
    from lvat_tf.robustness import ATTACKS
    if any(a not in ATTACKS for a in attacks):
        _common.fail(f"--robustness: expected some of {','.join(ATTACKS)} or none, got "
                     f"{','.join(FLAGS.robustness)}")
    out_dir = os.path.join(FLAGS.output_dir, recipe.name)
    summary_path = os.path.join(out_dir, "summary.json")
    old = experiments.earlier_runs(summary_path, base)
    if os.path.isfile(summary_path) and not old:
        logging.warning("%s was written for another budget; its rows are not kept", summary_path)
    rows = {}
    for name, overrides in recipe.variants:
        runs = dict(old.get(name, {}))
        if name in chosen:
            for seed, dseed in grid:
                log_dir = experiments.run_dir(out_dir, name, seed, dseed, single)
                runs[(seed, dseed)] = _run_one(run, make_config, dict(
                    base, **overrides, seed=seed, dataset_seed=dseed, log_dir=log_dir),
                    name, runs.get((seed, dseed)))
        if not runs:
            continue
        spec = make_config(**dict(base, **overrides, log_dir="x"))
        rows[name] = experiments.make_row(name, spec.method, spec.power_iteration, spec.epsilon,
                                          list(runs.values()))
        logging.info("%s: %s", name, {k: v for k, v in rows[name].items() if k != "runs"})
    # The recipe's order; rows kept from earlier sessions included.
    rows = [rows[n] for n in names if n in rows]
    table = experiments.render_table(recipe.description, rows)
    robust = {}
    for i, attack in enumerate(attacks):
        robust[attack] = _robustness(out_dir, rows, attack, single, embedding=(
            i == 0 and base["model"] == "lenet_pp"))
        table += _robustness_table(attack, robust[attack])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table)
    with open(summary_path, "w") as f:
        json.dump({"recipe": recipe.name, "base": base, "seed_grid": grid, "rows": rows,
                   "robustness": robust}, f, indent=2)
    print(table)


def _run_one(run, make_config, values, name, earlier):
    """Trains (or resumes, or re-evaluates) one run; returns its table entry."""
    try:
        cfg = make_config(**values)
        wall, cpu = time.time(), time.process_time()
        res = run.train_and_evaluate(cfg, verbose=0)
    except _common.user_errors() as e:
        _common.fail(f"{name} (seed {values['seed']}, dataset_seed {values['dataset_seed']}): {e}")
    wall, cpu = time.time() - wall, time.process_time() - cpu
    fit_s = res["train_seconds_this_session"]
    # Collapsed at the end of the run (a run that collapsed and recovered is not counted).
    collapsed = res.get("collapse", {}).get("final") is not None
    if fit_s == 0 and earlier and earlier["num_iterations"] == res["num_iterations"]:
        # Finished in an earlier session: nothing trained now, keep its times.
        return dict(earlier, test_error=round(res["test_error"], 2), collapsed=collapsed)
    gen_meta = os.path.join(cfg.log_dir, "generative", "generative.json")
    gen_min = None
    if os.path.isfile(gen_meta):
        with open(gen_meta) as f:
            gen_min = round(json.load(f)["training"]["seconds"] / 60, 2)
    if fit_s == 0:  # finished before, no earlier entry: only its training time is known
        wall = cpu = None
        fit_s = res.get("train_seconds_total", 0.0)
    return {"seed": cfg.seed, "dataset_seed": cfg.dataset_seed,
            "test_error": round(res["test_error"], 2), "collapsed": collapsed,
            "num_iterations": res["num_iterations"],
            "wall_minutes": None if wall is None else round(wall / 60, 2),
            "cpu_minutes": None if cpu is None else round(cpu / 60, 2),
            "ms_per_step": round(1000 * fit_s / max(1, cfg.num_iterations), 1) if fit_s else None,
            "generative_minutes": gen_min}


def _robustness(out_dir, rows, attack, single, embedding):
    """Accuracy-under-attack curves of the tabulated variants (robustness_<attack>.*).

    With several seeds, each variant's first run (lowest dataset_seed, seed) is attacked.
    """
    from lvat_tf import experiments, robustness

    dirs = [experiments.run_dir(out_dir, r["variant"], r["runs"][0]["seed"],
                                r["runs"][0]["dataset_seed"], single) for r in rows]
    try:
        curves = robustness.evaluate_runs(
            dirs, attack, robustness.DEFAULT_EPSILONS[attack], out_dir,
            FLAGS.robustness_examples, embedding, labels=[r["variant"] for r in rows])
    except _common.user_errors() as e:
        _common.fail(f"--robustness={attack}: {e}")
    return {v: {"epsilons": c["epsilons"], "accuracy": [round(100 * a, 2) for a in c["accuracy"]],
                "num_examples": c["num_examples"]} for v, c in curves.items()}


def _robustness_table(attack, curves):
    if not curves:
        return ""
    eps = next(iter(curves.values()))["epsilons"]
    n = next(iter(curves.values()))["num_examples"]
    kind = "FGSM (L-inf)" if attack == "fgsm" else "L2 fast gradient"
    out = (f"\nTest accuracy % under {kind} attack, {n} test images, epsilon in input space\n\n"
           "| variant | " + " | ".join(f"{e:g}" for e in eps) + " |\n"
           "|---|" + "---|" * len(eps) + "\n")
    for v, c in curves.items():
        out += f"| {v} | " + " | ".join(f"{a:.2f}" for a in c["accuracy"]) + " |\n"
    return out


if __name__ == "__main__":
    app.run(main)
