"""Seeds, run directories, aggregation and tables for recipe experiments (reproduce.py).

A learning result is claimed only with its spread: every variant of a recipe
runs over a grid of (seed, dataset_seed) pairs on the same budget, and a row
reports mean ± std (sample std, ddof = 1) with the per-run values, how many
runs collapsed (lvat_tf/training/collapse.py) and the CPU time per run.

``seed`` changes initialisation, batch order, dropout and VAT directions on
the same labeled subset; ``dataset_seed`` draws another labeled subset.
"""
import json
import math
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from absl import logging
from scipy import stats

from lvat_tf import analysis, hardware, recipes, robustness
from lvat_tf.checkpointing import CheckpointError
from lvat_tf.config import ConfigError, make_config
from lvat_tf.data import DataError
from lvat_tf.files import DirectoryBusy, DirectoryLock, write_text_atomic
from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.generative import quality as generative_quality
from lvat_tf.generative.model_dir import GenerativeModelError
from lvat_tf.generative.train_glow import GlowConfig, train_glow
from lvat_tf.generative.train_vae import VAEConfig, train_vae, training_images
from lvat_tf.regularizers import methods
from lvat_tf.training import run as run_lib
from lvat_tf.distribute import DistributionError
from lvat_tf.training.run import RunDirError, TrainingDiverged
from lvat_tf.upstream.convert import ConvertError


def seed_grid(base_seed: int, base_dataset_seed: int, num_seeds: int = 1,
              dataset_seeds: Optional[Sequence[int]] = None) -> List[Tuple[int, int]]:
    """(seed, dataset_seed) pairs: seeds base_seed .. base_seed + num_seeds - 1 for each subset.

    Raises:
      ValueError: num_seeds < 1.
    """
    if num_seeds < 1:
        raise ValueError(f"expected >= 1 seeds, got {num_seeds}")
    subsets = list(dataset_seeds) if dataset_seeds else [base_dataset_seed]
    return [(base_seed + i, d) for d in subsets for i in range(num_seeds)]


def run_dir(out_dir: str, variant: str, seed: int, dataset_seed: int, single: bool) -> str:
    """A run's directory: ``<out>/<variant>`` for a one-run grid, else ``.../seed<s>-data<d>``.

    One-run grids keep the layout of earlier, single-seed summaries so their
    runs resume.
    """
    if single:
        return os.path.join(out_dir, variant)
    return os.path.join(out_dir, variant, f"seed{seed}-data{dataset_seed}")


def single_layout(grid, recipe_base) -> bool:
    """Whether a grid's one run keeps the flat ``<out>/<variant>`` layout: only the recipe's
    own (seed, dataset_seed). A run with an overridden ``--seed`` (e.g. one seed of a
    seeded row run in its own process) gets its ``seed<s>-data<d>`` directory, so that it
    neither shares the flat directory with the recipe seed's run nor is missed when the
    row is aggregated with ``--seeds=N``."""
    return len(grid) == 1 and grid[0] == (recipe_base.get("seed", 1),
                                          recipe_base.get("dataset_seed", 1))


#: A recipe variant's ``init_from="variant:NAME"`` starts from variant NAME's run of
#: the same seed and labeled subset (a warm start, e.g. LVAT from a VAT solution).
VARIANT_PREFIX = "variant:"


def resolve_init_from(value: Optional[str], out_dir: str, names: Sequence[str], seed: int,
                      dataset_seed: int, single: bool) -> Optional[str]:
    """``init_from`` of a recipe run: a ``variant:NAME`` reference made a finished run's directory.

    Raises:
      ExperimentError: an unknown variant, or its run of this seed not finished yet.
    """
    if not value or not str(value).startswith(VARIANT_PREFIX):
        return value
    source = value[len(VARIANT_PREFIX):]
    if source not in names:
        raise ExperimentError(f"init_from {value!r}: no variant {source!r} in this recipe")
    path = run_dir(out_dir, source, seed, dataset_seed, single)
    if not os.path.isfile(os.path.join(path, "results.json")):
        raise ExperimentError(f"init_from {value!r}: {path} is not a finished run; run "
                              f"--variants={source} with the same seeds first")
    return path


def mean_std(values: Iterable[float]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample std); std None for one value, both None for none."""
    v = [float(x) for x in values]
    if not v:
        return None, None
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _mean_or_none(values):
    v = [x for x in values if x is not None]
    return round(sum(v) / len(v), 2) if v else None


def make_row(variant: str, method: str, power_iteration: str, epsilon: float,
             runs: List[dict]) -> dict:
    """One table row from its runs (dicts with seed, dataset_seed, test_error, collapsed, ...)."""
    runs = sorted(runs, key=lambda r: (r["dataset_seed"], r["seed"]))
    m, s = mean_std(r["test_error"] for r in runs)
    iters = sorted({r["num_iterations"] for r in runs})
    return {
        "variant": variant, "method": method, "power_iteration": power_iteration,
        "epsilon": epsilon, "runs": runs, "num_runs": len(runs),
        "test_error": None if m is None else round(m, 2),
        "test_error_std": None if s is None else round(s, 2),
        "num_collapsed": sum(1 for r in runs if r.get("collapsed")),
        "num_iterations": iters[0] if len(iters) == 1 else iters,
        "wall_minutes": _mean_or_none(r.get("wall_minutes") for r in runs),
        "cpu_minutes": _mean_or_none(r.get("cpu_minutes") for r in runs),
        "ms_per_step": _mean_or_none(r.get("ms_per_step") for r in runs),
        "generative_minutes": _mean_or_none(r.get("generative_minutes") for r in runs),
        "terms": _mean_terms(r.get("terms") for r in runs),
    }


def _mean_terms(per_run) -> Dict[str, float]:
    """Mean of each regulariser term over the runs that recorded it."""
    values: Dict[str, list] = {}
    for terms in per_run:
        for k, v in (terms or {}).items():
            values.setdefault(k, []).append(v)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(values.items())}


def earlier_runs(summary_path: str, base: dict) -> Dict[str, Dict[Tuple[int, int], dict]]:
    """Runs of an earlier summary.json with the same budget: {variant: {(seed, dseed): run}}.

    Summaries written before seeds existed hold one run per row (the row itself).
    """
    if not os.path.isfile(summary_path):
        return {}
    with open(summary_path) as f:
        old = json.load(f)
    if {k: v for k, v in old.get("base", {}).items() if k not in ("seed", "dataset_seed")} != \
            {k: v for k, v in json.loads(json.dumps(base)).items()
             if k not in ("seed", "dataset_seed")}:
        return {}
    out = {}
    for row in old.get("rows", []):
        runs = row.get("runs") or [dict(row, seed=old["base"].get("seed", 1),
                                        dataset_seed=old["base"].get("dataset_seed", 1))]
        out[row["variant"]] = {(r["seed"], r["dataset_seed"]): r for r in runs}
    return out


def _fmt(v, nd=2):
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def render_table(description: str, rows: List[dict]) -> str:
    """The Markdown table of a recipe's rows (mean ± std over runs, per-run values)."""
    head = ("| variant | method | power iteration | epsilon | runs | test error % (mean ± std) | "
            "per run (seed-data: error) | collapsed | updates | wall min/run | CPU min/run | "
            "ms/step* | generative model min** | last-epoch terms*** |\n" + "|---" * 14 + "|\n")
    lines = []
    for r in rows:
        err = _fmt(r["test_error"]) + ("" if r["test_error_std"] is None
                                       else f" ± {r['test_error_std']:.2f}")
        per = ", ".join(f"{x['seed']}-{x['dataset_seed']}: {x['test_error']:.2f}"
                        + (" (C)" if x.get("collapsed") else "") for x in r["runs"])
        lines.append(f"| {r['variant']} | {r['method']} | {r['power_iteration']} | "
                     f"{r['epsilon']} | {r['num_runs']} | {err} | {per} | "
                     f"{r['num_collapsed']}/{r['num_runs']} | {r['num_iterations']} | "
                     f"{_fmt(r['wall_minutes'])} | {_fmt(r['cpu_minutes'])} | "
                     f"{_fmt(r['ms_per_step'], 1)} | {_fmt(r['generative_minutes'])} | "
                     f"{_fmt_terms(r.get('terms'))} |\n")
    return (f"{description}\n\n" + head + "".join(lines) +
            "\n*ms/step = fit wall time (incl. periodic evaluation) / updates; CPU min counts "
            "all threads of the process; (C) = collapsed at the end of the run (docs/running.md, 'Collapse "
            "detection'); a run not trained this session keeps its earlier times (- = unknown).\n"
            "**training time of the generative model (wall min; included in the times of the "
            "run that trained it).\n"
            "***the regularisers' terms in the last training epoch (epoch mean over its "
            "updates, mean over runs): how much consistency cost is left at the end.\n")


def _fmt_terms(terms) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in (terms or {}).items()) or "-"


def paired_differences(rows: List[dict], references: Sequence[str]) -> List[dict]:
    """Each variant against each reference, seed by seed.

    Two runs pair when they share (seed, dataset_seed): the same labeled subset,
    initialisation and batch order, so the difference of their test errors
    removes most of the seed's own effect (the spread across seeds is often
    larger than the gap between methods; e.g. CIFAR-10's baseline spread 4.4
    points across three seeds). References absent from ``rows`` are skipped.

    Args:
      rows: :func:`make_row` dicts.
      references: variant names to compare every other row with.

    Returns:
      One dict per (variant, reference) with at least one common pair (a
      reference against a later reference once, not also the reverse):
      variant, reference, pairs ([seed, dataset_seed, variant − reference]),
      num_pairs, difference / difference_std (mean and sample std of the
      differences, percentage points; std None for one pair), num_lower
      (pairs in which the variant's error is lower), and the paired t-test on
      the differences: t (mean / (std / sqrt(n))) and p_value (two-sided,
      n - 1 degrees of freedom); both None for one pair or identical differences.
      With three seeds a p below 0.05 needs |t| > 4.3: most gaps here are not
      significant, and the table says so rather than the eye.
    """
    by_name = {r["variant"]: r for r in rows}
    out, done = [], set()
    for ref in references:
        if ref not in by_name:
            continue
        ref_err = {(r["seed"], r["dataset_seed"]): r["test_error"] for r in by_name[ref]["runs"]}
        for row in rows:
            if row["variant"] == ref or (row["variant"], ref) in done:
                continue  # itself, or the reverse of a pair already listed
            pairs = [[r["seed"], r["dataset_seed"],
                      round(r["test_error"] - ref_err[(r["seed"], r["dataset_seed"])], 2)]
                     for r in row["runs"] if (r["seed"], r["dataset_seed"]) in ref_err]
            if not pairs:
                continue
            m, sd = mean_std(d for _, _, d in pairs)
            t = p_value = None
            if sd:  # None for one pair, 0 when every pair differs by the same amount
                n = len(pairs)
                t = m / (sd / math.sqrt(n))
                p_value = float(2 * stats.t.sf(abs(t), n - 1))
            out.append({"variant": row["variant"], "reference": ref, "pairs": pairs,
                        "num_pairs": len(pairs), "difference": round(m, 2),
                        "difference_std": None if sd is None else round(sd, 2),
                        "num_lower": sum(1 for _, _, d in pairs if d < 0),
                        "t": None if t is None else round(t, 2),
                        "p_value": None if p_value is None else round(p_value, 4)})
            done.add((ref, row["variant"]))
    return out


def render_paired_table(paired: List[dict]) -> str:
    """The Markdown table of :func:`paired_differences` ('' when there is none)."""
    if not paired:
        return ""
    out = ("\nPaired by seed (variant − reference test error, percentage points, over the runs "
           "with the same seed and labeled subset in both rows)\n\n"
           "| variant | reference | pairs | difference (mean ± std) | per pair (seed-data: "
           "difference) | variant lower in | paired t (two-sided p) |\n" + "|---" * 7 + "|\n")
    for p in paired:
        diff = f"{p['difference']:+.2f}" + ("" if p["difference_std"] is None
                                            else f" ± {p['difference_std']:.2f}")
        per = ", ".join(f"{s}-{d}: {x:+.2f}" for s, d, x in p["pairs"])
        test = "-" if p.get("t") is None else f"{p['t']:+.2f} ({p['p_value']:.3f})"
        out += (f"| {p['variant']} | {p['reference']} | {p['num_pairs']} | {diff} | {per} | "
                f"{p['num_lower']}/{p['num_pairs']} | {test} |\n")
    return out


# ----------------------------------------------------------------------------
# Running a recipe (run_scripts/reproduce.py is flag parsing + run_recipe).
# ----------------------------------------------------------------------------

class ExperimentError(ValueError):
    """A bad recipe request or a failed run of one; ``str(e)`` is one line."""


def user_errors() -> tuple:
    """The exception types that end a script with a one-line message (exit 1)."""
    return (ConfigError, DataError, RunDirError, TrainingDiverged, GenerativeModelError,
            DistributionError, CheckpointError, ExperimentError, ConvertError, DirectoryBusy)


def _train_or_check_generative(kind, settings, model_dir, common):
    """Checks a trained model's settings against the recipe's, or trains it (under its lock)."""
    meta_path = os.path.join(model_dir, model_dir_lib.META)
    if os.path.isfile(meta_path):
        trained = model_dir_lib.read_json(meta_path).get("training", {})
        for k, v in settings.items():
            got = trained.get(k)
            if (list(got) if isinstance(got, (list, tuple)) else got) != \
                    (list(v) if isinstance(v, (list, tuple)) else v):
                raise ExperimentError(f"{model_dir} holds a {kind} trained with {k}={got!r}, "
                                      f"the recipe asks {v!r}; move it away to retrain")
    else:
        logging.info("Training the recipe's %s into %s (%s)", kind, model_dir, settings)
        if kind == "vae":
            train_vae(VAEConfig(**common, **settings), verbose=False)
        elif kind == "glow":
            train_glow(GlowConfig(**common, **settings), verbose=False)
        else:
            raise ExperimentError(f"unknown generative model kind {kind!r}; expected vae|glow")


def prepare_generative(kind: str, dataset: str, data_dir: Optional[str], settings: dict,
                       model_dir: str, seed: int = 1, tfds_download: bool = True) -> dict:
    """Trains (or resumes, or reuses) the generative model every LVAT variant of a recipe shares.

    The model is trained once into ``model_dir`` with ``settings`` (VAEConfig /
    GlowConfig fields); its quality on 1,000 test images (lvat_tf.generative.
    quality) is written beside it as quality.json.

    Returns:
      {"kind", "dir", "settings", "architecture", "training_steps",
       "training_minutes", "quality"}.

    Raises:
      ExperimentError: ``model_dir`` holds a model trained with other settings.
    """
    common = dict(dataset=dataset, data_dir=data_dir, model_dir=model_dir, seed=seed,
                  tfds_download=tfds_download)
    # Two reproduce.py streams of one recipe share this model: the second waits
    # while the first trains it, then reuses it.
    with DirectoryLock(model_dir, "generative model dir", wait=True, on_wait=lambda who:
                       logging.info("%s is being trained by %s: waiting", model_dir, who)):
        _train_or_check_generative(kind, settings, model_dir, common)
    model, meta = model_dir_lib.load(model_dir, expect={"kind": kind, "dataset": dataset})
    q_path = os.path.join(model_dir, "quality.json")
    quality = model_dir_lib.read_json(q_path)
    if quality is None:
        _, x_test, _ = training_images(dataset, data_dir, tfds_download)
        quality = generative_quality.evaluate(model, kind, x_test, seed=seed)
        model_dir_lib.write_json(q_path, quality)
    training = meta.get("training", {})
    return {"kind": kind, "dir": model_dir, "settings": dict(settings),
            "architecture": meta["architecture"], "training_steps": training.get("steps"),
            "training_minutes": round(training.get("seconds", 0.0) / 60, 2),
            "quality": quality}


#: Training logs that are not a regulariser's term.
_NOT_TERMS = ("epoch", "step", "loss", "xe_loss", "accuracy", "fit_seconds",
              "consistency_weight", "learning_rate", "beta1")


def last_epoch_terms(results: dict) -> Dict[str, float]:
    """{term: value} of the regularisers' terms in a run's last training epoch (epoch means
    of e.g. ``vat_loss``, ``lvat_loss``, ``mat_loss_info``); {} when none was recorded."""
    history = results.get("train_history") or []
    if not history:
        return {}
    return {k: round(v, 4) for k, v in history[-1].items() if k not in _NOT_TERMS}


def _run_one(cfg, name: str, earlier: Optional[dict]) -> dict:
    """Trains (or resumes, or re-evaluates) one run; returns its table entry."""
    wall, cpu = time.time(), time.process_time()
    try:
        res = run_lib.train_and_evaluate(cfg, verbose=0)
    except user_errors() as e:
        raise ExperimentError(f"{name} (seed {cfg.seed}, dataset_seed {cfg.dataset_seed}): "
                              f"{e}") from None
    wall, cpu = time.time() - wall, time.process_time() - cpu
    fit_s = res["train_seconds_this_session"]
    # Collapsed at the end of the run (a run that collapsed and recovered is not counted).
    collapsed = res.get("collapse", {}).get("final") is not None
    if fit_s == 0 and earlier and earlier["num_iterations"] == res["num_iterations"]:
        # Finished in an earlier session: nothing trained now, keep its times.
        return dict(earlier, test_error=round(res["test_error"], 2), collapsed=collapsed,
                    terms=earlier.get("terms") or last_epoch_terms(res))
    gen_meta = os.path.join(cfg.log_dir, "generative", model_dir_lib.META)
    gen_min = None
    if os.path.isfile(gen_meta):
        gen_min = round(model_dir_lib.read_json(gen_meta)["training"]["seconds"] / 60, 2)
    if fit_s == 0:  # finished before, no earlier entry: only its training time is known
        wall = cpu = None
        fit_s = res.get("train_seconds_total", 0.0)
    return {"seed": cfg.seed, "dataset_seed": cfg.dataset_seed,
            "test_error": round(res["test_error"], 2), "collapsed": collapsed,
            "terms": last_epoch_terms(res),
            "num_iterations": res["num_iterations"],
            "wall_minutes": None if wall is None else round(wall / 60, 2),
            "cpu_minutes": None if cpu is None else round(cpu / 60, 2),
            "ms_per_step": round(1000 * fit_s / max(1, cfg.num_iterations), 1) if fit_s else None,
            "generative_minutes": gen_min}


def _robustness(out_dir, rows, attack, single, num_examples, embedding):
    """Accuracy-under-attack curves of the tabulated variants (robustness_<attack>.*).

    With several seeds, each variant's first run (lowest dataset_seed, seed) is attacked.
    """
    dirs = [run_dir(out_dir, r["variant"], r["runs"][0]["seed"], r["runs"][0]["dataset_seed"],
                    single) for r in rows]
    try:
        curves = robustness.evaluate_runs(
            dirs, attack, robustness.DEFAULT_EPSILONS[attack], out_dir, num_examples,
            embedding, labels=[r["variant"] for r in rows])
    except user_errors() as e:
        raise ExperimentError(f"--robustness={attack}: {e}") from None
    return {v: {"epsilons": c["epsilons"], "accuracy": [round(100 * a, 2) for a in c["accuracy"]],
                "num_examples": c["num_examples"]} for v, c in curves.items()}


def render_robustness_table(attack: str, curves: dict) -> str:
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


def render_generative_table(models: Dict[str, dict]) -> str:
    """The shared generative models of a recipe: settings, training time and quality."""
    if not models:
        return ""
    out = ("\nGenerative models (trained once, shared by every LVAT variant; quality on "
           "1,000 test images)\n\n| kind | architecture | training steps | wall min | "
           "||x - Dec(Enc(x))||_2 mean (median, p90) | VAE rec. nats/image or Glow bits/dim | "
           "latent ||z|| mean (dims, std/dim) |\n" + "|---" * 7 + "|\n")
    for kind, m in models.items():
        q = m["quality"]
        r, lat = q["reconstruction_l2"], q["latent_norm"]
        fit = q.get("vae_reconstruction_nats", q.get("glow_bits_per_dim"))
        arch = ", ".join(f"{k} {v}" for k, v in sorted(m["architecture"].items())
                         if k != "init_seed")
        out += (f"| {kind} | {arch} | {m['training_steps']} | {m['training_minutes']:.1f} | "
                f"{r['mean']:.2f} ({r['median']:.2f}, {r['p90']:.2f}) | {fit:.3f} | "
                f"{lat['mean']:.2f} ({q['latent_dim']}, {q['latent_std_per_dim']:.3f}) |\n")
    return out


def _write_summary(out_dir, recipe, base, grid, runs, configs, models, robust, references):
    """Rows in the recipe's order, the Markdown table and summary.json, written atomically.

    Written after every run, so that an interrupted experiment leaves its table.
    """
    rows = []
    for name, _ in recipe.variants:
        if runs[name]:
            spec = configs[name]
            rows.append(make_row(name, spec.method, spec.power_iteration, spec.epsilon,
                                 list(runs[name].values())))
    paired = paired_differences(rows, references)
    table = (render_table(recipe.description, rows) + render_paired_table(paired)
             + render_generative_table(models))
    for attack, curves in robust.items():
        table += render_robustness_table(attack, curves)
    summary = {"recipe": recipe.name, "base": base, "seed_grid": grid, "rows": rows,
               "paired": paired, "generative": models, "robustness": robust}
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, "summary.md"), table)
    write_text_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2))
    for row in rows:
        logging.info("%s: %s", row["variant"], {k: v for k, v in row.items() if k != "runs"})
    return table, summary


def _seed_curves(out_dir: str, rows: List[dict], single: bool) -> None:
    """learning_curves.png in the recipe directory: each variant's mean over its seeds.

    Runs whose directory is not here (rows kept from a summary written on
    another machine) are left out of the figure, and said so in the log.
    """
    groups = []
    for row in rows:
        dirs = [run_dir(out_dir, row["variant"], r["seed"], r["dataset_seed"], single)
                for r in row["runs"]]
        here = [d for d in dirs if os.path.isdir(os.path.join(d, "tb"))]
        if len(here) < len(dirs):
            logging.info("learning curves: %s has %d of its %d runs here", row["variant"],
                         len(here), len(dirs))
        if here:
            groups.append((row["variant"], here))
    if groups:
        analysis.seed_curves(groups, os.path.join(out_dir, "learning_curves.png"))


def run_recipe(recipe, output_dir: str, variants: Optional[Sequence[str]] = None,
               overrides: Optional[dict] = None, num_seeds: int = 1,
               dataset_seeds: Optional[Sequence[int]] = None, data_dir: Optional[str] = None,
               attacks: Optional[Sequence[str]] = None, robustness_examples: int = 0,
               paired_with: Optional[Sequence[str]] = None,
               bfloat16: str = recipes.DEFAULT_BFLOAT16,
               has_amx: Optional[bool] = None) -> Tuple[str, dict]:
    """Runs a recipe's variants over the seed grid on one budget and tabulates them.

    Every run resumes from its checkpoints; rows of variants not run now are
    kept from an earlier summary of the same budget. The recipe's generative
    models (``recipe.generative``) are trained once into
    ``<output_dir>/<recipe>/generative/<kind>`` and given to every LVAT variant.

    Args:
      recipe: a :class:`lvat_tf.recipes.Recipe`.
      output_dir: runs go to ``<output_dir>/<recipe.name>/<variant>[/seed<S>-data<D>]``.
      variants: names to run now (default: all).
      overrides: base fields to override (num_epochs, epoch_decay_start, ...).
      num_seeds / dataset_seeds: the seed grid (:func:`seed_grid`).
      data_dir: the dataset directory (default: the recipe's).
      attacks: robustness attacks to evaluate finished variants with (default:
        the recipe's).
      robustness_examples: test examples per attack evaluation (0 = all).
      paired_with: the reference variants of the paired table (default: the recipe's).
      bfloat16: one of :data:`lvat_tf.recipes.BFLOAT16_MODES`: whether a variant's
        verified bfloat16 twin (``recipe.bfloat16_twins``) runs in its place (logged);
        ``auto``: on CPUs with AMX.
      has_amx: the CPU's AMX, for ``auto`` (default: :func:`lvat_tf.hardware.has_amx`).

    Returns:
      (Markdown table, summary dict); both are also written as
      summary.md / summary.json in ``<output_dir>/<recipe.name>``, with
      learning_curves.png (each variant's mean over its seeds, min-max band).

    Raises:
      ExperimentError (or another of :func:`user_errors`): one line.
    """
    names = [n for n, _ in recipe.variants]
    chosen = list(variants) if variants else names
    unknown = [v for v in chosen if v not in names]
    if unknown:
        raise ExperimentError(f"--variants: unknown variant {unknown[0]!r}; expected some of "
                              + ",".join(names))
    amx = hardware.has_amx() if has_amx is None else has_amx
    try:  # the mode is checked there (ValueError naming --bfloat16)
        chosen, swaps = recipes.with_bfloat16_twins(recipe, chosen, bfloat16, amx)
    except ValueError as e:
        raise ExperimentError(str(e)) from None
    evidence = {v: e for v, _, e in recipe.bfloat16_twins}
    for variant, twin in swaps.items():
        logging.info("--bfloat16=%s%s: running %s (the same run under --mixed_precision) in "
                     "place of %s; seeds showed it as accurate (%s); --bfloat16=off runs %s",
                     bfloat16, " on an AMX CPU" if bfloat16 == "auto" else "", twin, variant,
                     evidence[variant], variant)
    if recipe.bfloat16_twins and not swaps and bfloat16 == "auto":
        logging.info("--bfloat16=auto: no AMX on this CPU, the variants run as named")
    base = dict(recipe.base, **(overrides or {}))
    if data_dir:
        base["data_dir"] = data_dir
    try:
        grid = seed_grid(base.get("seed", 1), base.get("dataset_seed", 1), num_seeds,
                         dataset_seeds)
    except ValueError as e:
        raise ExperimentError(f"--seeds/--dataset_seeds: {e}") from None
    references = tuple(paired_with) if paired_with else recipe.references()
    references = tuple(swaps.get(r, r) for r in references)
    bad = [r for r in references if r not in names]
    if bad:
        raise ExperimentError(f"--paired_with: unknown variant {bad[0]!r}; expected some of "
                              + ",".join(names))
    attacks = list(recipe.robustness if attacks is None else attacks)
    if any(a not in robustness.ATTACKS for a in attacks):
        raise ExperimentError(f"--robustness: expected some of {','.join(robustness.ATTACKS)} "
                              f"or none, got {','.join(attacks)}")
    single = single_layout(grid, recipe.base)
    out_dir = os.path.join(output_dir, recipe.name)
    summary_path = os.path.join(out_dir, "summary.json")
    old = earlier_runs(summary_path, base)
    if os.path.isfile(summary_path) and not old:
        logging.warning("%s was written for another budget; its rows are not kept", summary_path)
    configs = {name: make_config(**dict(base, **ov, log_dir="x")) for name, ov in recipe.variants}
    models = {}

    def generative_dir(kind):
        # Trained (or checked) when the first variant that needs it runs.
        if kind not in models:
            models[kind] = prepare_generative(
                kind, base["dataset"], base.get("data_dir"), recipe.generative[kind],
                os.path.join(out_dir, "generative", kind), base.get("seed", 1),
                base.get("tfds_download", True))
        return models[kind]["dir"]

    runs = {name: dict(old.get(name, {})) for name in names}
    # Seed-major: every chosen variant of the first seed before the second seed,
    # so that an interrupted experiment holds complete comparisons.
    for seed, dseed in grid:
        for name, ov in recipe.variants:
            if name not in chosen:
                continue
            kind = methods.get_method(configs[name].method).generative
            extra = ({"generative_model_dir": generative_dir(kind)}
                     if kind in recipe.generative else {})
            if "init_from" in ov:
                extra["init_from"] = resolve_init_from(ov["init_from"], out_dir, names, seed,
                                                       dseed, single)
            fields = dict(base, **ov)
            fields.update(extra, seed=seed, dataset_seed=dseed,
                          log_dir=run_dir(out_dir, name, seed, dseed, single))
            cfg = make_config(**fields)
            runs[name][(seed, dseed)] = _run_one(cfg, name, runs[name].get((seed, dseed)))
            _write_summary(out_dir, recipe, base, grid, runs, configs, models, {}, references)
    for kind in recipe.generative:  # report models trained in earlier sessions too
        if kind not in models and os.path.isfile(
                os.path.join(out_dir, "generative", kind, model_dir_lib.META)):
            generative_dir(kind)
    table, summary = _write_summary(out_dir, recipe, base, grid, runs, configs, models, {},
                                    references)
    _seed_curves(out_dir, summary["rows"], single)
    if attacks:
        robust = {}
        for i, attack in enumerate(attacks):
            robust[attack] = _robustness(out_dir, summary["rows"], attack, single,
                                         robustness_examples, embedding=(
                                             i == 0 and base.get("model") == "lenet_pp"))
        table, summary = _write_summary(out_dir, recipe, base, grid, runs, configs, models,
                                        robust, references)
    return table, summary
