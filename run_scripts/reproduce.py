"""Run a recipe's methods on the same budget and tabulate test error and time.

    python run_scripts/reproduce.py --recipe=mnist100 --output_dir=runs/reproduce
    python run_scripts/reproduce.py --recipe=mnist100 --variants=vat,vat_exact --num_epochs=10

Each variant is a full train.py run (resumable) in OUTPUT_DIR/<recipe>/<variant>;
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
flags.DEFINE_integer("seed", None, "Override the recipe's seed.")
flags.DEFINE_list("robustness", None, "Attacks (fgsm, l2) to evaluate the finished variants with "
                  "(default: the recipe's; 'none' skips).")
flags.DEFINE_integer("robustness_examples", 0, "Test examples per robustness evaluation (0 = all).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
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
    rows = _earlier_rows(out_dir, base)
    for name, overrides in recipe.variants:
        if name not in chosen:
            continue
        values = dict(base, **overrides, log_dir=os.path.join(out_dir, name))
        try:
            cfg = make_config(**values)
            wall, cpu = time.time(), time.process_time()
            res = run.train_and_evaluate(cfg, verbose=0)
        except _common.user_errors() as e:
            _common.fail(f"{name}: {e}")
        wall, cpu = time.time() - wall, time.process_time() - cpu
        fit_s = res["train_seconds_this_session"]
        gen_meta = os.path.join(cfg.log_dir, "generative", "generative.json")
        gen_min = None
        if os.path.isfile(gen_meta):
            with open(gen_meta) as f:
                gen_min = round(json.load(f)["training"]["seconds"] / 60, 2)
        earlier = rows.get(name)
        if fit_s == 0 and earlier and earlier["num_iterations"] == res["num_iterations"]:
            # Finished in an earlier session: nothing trained now, keep its times.
            rows[name] = dict(earlier, test_error=round(res["test_error"], 2))
            continue
        if fit_s == 0:  # finished before, no earlier row: only its training time is known
            wall = cpu = None
            fit_s = res.get("train_seconds_total", 0.0)
        rows[name] = {"variant": name, "method": cfg.method,
                      "power_iteration": cfg.power_iteration, "epsilon": cfg.epsilon,
                      "test_error": round(res["test_error"], 2),
                      "num_iterations": res["num_iterations"], "wall_minutes": None if wall is None else round(wall / 60, 2),
                      "cpu_minutes": None if cpu is None else round(cpu / 60, 2),
                      "ms_per_step": (round(1000 * fit_s / max(1, cfg.num_iterations), 1)
                                      if fit_s else None),
                      "generative_minutes": gen_min}
        logging.info("%s: %s", name, rows[name])
    # The recipe's order; rows kept from earlier sessions included.
    rows = [rows[n] for n in names if n in rows]
    header = ("| variant | method | power iteration | epsilon | test error % | updates | "
              "wall min | CPU min | ms/step* | generative model min** |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = "".join(f"| {r['variant']} | {r['method']} | {r['power_iteration']} | "
                    f"{r['epsilon']} | {r['test_error']:.2f} | {r['num_iterations']} | "
                    f"{_or_dash(r['wall_minutes'])} | {_or_dash(r['cpu_minutes'])} | "
                    f"{_or_dash(r['ms_per_step'])} | "
                    f"{_or_dash(r['generative_minutes'])} |\n"
                    for r in rows)
    table = (f"{recipe.description}\n\n" + header + lines +
             "\n*ms/step = fit wall time (incl. periodic evaluation) / updates; CPU min counts "
             "all threads; a row not run this session keeps its earlier times (- = finished before "
             "this summary existed; see the README).\n"
             "**training time of the generative model (in wall min; included in wall/CPU "
             "min of the run that trained it).\n")
    robust = {}
    for i, attack in enumerate(attacks):
        robust[attack] = _robustness(out_dir, rows, attack, embedding=(i == 0 and
                                                                     base["model"] == "lenet_pp"))
        table += _robustness_table(attack, robust[attack])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"recipe": recipe.name, "base": base, "rows": rows, "robustness": robust}, f,
                  indent=2)
    print(table)


def _or_dash(v):
    return "-" if v is None else v


def _earlier_rows(out_dir, base):
    """Rows of an earlier summary.json in out_dir, by variant, if it had the same budget."""
    path = os.path.join(out_dir, "summary.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    if old.get("base") != json.loads(json.dumps(base)):
        logging.warning("%s was written for another budget; its rows are not kept", path)
        return {}
    return {r["variant"]: r for r in old.get("rows", [])}


def _robustness(out_dir, rows, attack, embedding):
    """Accuracy-under-attack curves of the tabulated variants (robustness_<attack>.*)."""
    from lvat_tf import robustness

    dirs = [os.path.join(out_dir, r["variant"]) for r in rows]
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
