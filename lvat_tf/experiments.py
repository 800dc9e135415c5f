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
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


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
    }


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
            "ms/step* | generative model min** |\n" + "|---" * 13 + "|\n")
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
                     f"{_fmt(r['ms_per_step'], 1)} | {_fmt(r['generative_minutes'])} |\n")
    return (f"{description}\n\n" + head + "".join(lines) +
            "\n*ms/step = fit wall time (incl. periodic evaluation) / updates; CPU min counts "
            "all threads of the process; (C) = collapsed at the end of the run (README, 'Collapse "
            "detection'); a run not trained this session keeps its earlier times (- = unknown).\n"
            "**training time of the generative model (wall min; included in the times of the "
            "run that trained it).\n")
