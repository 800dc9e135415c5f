"""Regression of a finished run against the published tables.

The tables (``resources/published_numbers.json``, from
``../shared/reference/published-numbers.md``) carry, per cell, the recipe a run
must match to be compared: updates, decay tail, batch sizes, epsilon, model,
ZCA. A run that matches is **compared**; one that does not (a scaled-down CPU
run) is **reported as scaled** and never judged against the full-budget number.

Tolerance: a single run is compared with a mean over seeds, so it fails when it
is worse than ``mean + 3 * std`` (a faithful run lies below that with ~99.9 %
probability if seeds were the only source of variation); the std is floored at
0.2 points because some cells report none (8.175) or an implausibly small one
(5.81 +- 0.02) for a single-seed comparison. Better than published is never a
failure.
"""
import dataclasses
import json
import os
from typing import List, Optional

from lvat_tf import config as config_lib
from lvat_tf.data.preprocessing import Preprocessor
from lvat_tf.data import registry
from lvat_tf.regularizers import methods

TABLE = os.path.join(os.path.dirname(__file__), "resources", "published_numbers.json")
STD_FLOOR = 0.2
K_SIGMA = 3.0


def load_table(path: str = TABLE) -> List[dict]:
    with open(path) as f:
        return json.load(f)["rows"]


def run_facts(log_dir: str) -> dict:
    """What a finished run is: config + results.json, in the table's terms."""

    cfg = config_lib.load_config(log_dir)
    res_path = os.path.join(log_dir, "results.json")
    if not os.path.isfile(res_path):
        raise config_lib.ConfigError("log_dir", f"{log_dir} holds no results.json (the run has "
                                     "not finished)")
    with open(res_path) as f:
        res = json.load(f)
    prep = Preprocessor.load(os.path.join(log_dir, "preprocessing.npz"))
    return dict(config_facts(cfg, prep.uses_zca), log_dir=log_dir,
                test_error=float(res["test_error"]))


def config_facts(cfg, zca: Optional[bool] = None) -> dict:
    """A config in the table's terms; ``zca`` defaults to what training would fit."""

    spec = registry.get_spec(cfg.dataset)
    if zca is None:
        zca = spec.zca and methods.get_method(cfg.method).input_scaling == "vat"
    n_train = spec.num_train
    return {"dataset": cfg.dataset,
            "setting": "sl" if cfg.num_labeled_examples >= n_train else "ssl",
            "num_labeled_examples": cfg.num_labeled_examples,
            "augmentation": bool(cfg.aug_trans or cfg.aug_flip), "method": cfg.method,
            "model": cfg.model, "zca": bool(zca),
            "updates": cfg.num_epochs * cfg.num_iter_per_epoch,
            "decay_updates": (cfg.num_epochs - cfg.epoch_decay_start) * cfg.num_iter_per_epoch,
            "batch_size": cfg.batch_size, "ul_batch_size": cfg.ul_batch_size,
            "epsilon": cfg.epsilon, "xi": cfg.xi}


def matching_rows(facts: dict, table: List[dict]) -> List[dict]:
    keys = ("dataset", "setting", "augmentation", "method")
    rows = [r for r in table if all(r[k] == facts[k] for k in keys)]
    # On CIFAR-10 the preprocessing is part of the cell (VAT paper: ZCA; LVAT: none).
    return [r for r in rows if facts["dataset"] != "cifar10" or r["zca"] == facts["zca"]]


def recipe_mismatches(facts: dict, row: dict) -> List[str]:
    """Why a run does not follow a row's recipe (empty: it does)."""
    recipe = row.get("recipe")
    if recipe is None:
        return ["the source gives no recipe we can match"]
    out = []
    if facts["model"] != row["model"]:
        out.append(f"model {facts['model']} (recipe {row['model']})")
    if facts["num_labeled_examples"] != row["num_labeled_examples"]:
        out.append(f"{facts['num_labeled_examples']} labels (recipe {row['num_labeled_examples']})")
    for k in ("updates", "decay_updates", "batch_size", "ul_batch_size", "epsilon", "xi"):
        if k in recipe and recipe[k] is not None and abs(facts[k] - recipe[k]) > 1e-12:
            out.append(f"{k} {facts[k]:g} (recipe {recipe[k]:g})")
    return out


@dataclasses.dataclass
class Verdict:
    row: dict
    ours: float
    status: str  # "ok", "WORSE", "scaled", "reported"
    sigmas: Optional[float]
    tolerance: Optional[float]
    why: str

    def line(self) -> str:
        std = f" +- {self.row['std']}" if self.row.get("std") is not None else ""
        sig = f", {self.sigmas:+.1f} sd" if self.sigmas is not None else ""
        return (f"{self.row['source']}: published {self.row['error']}{std} %, ours "
                f"{self.ours:.2f} % ({self.ours - self.row['error']:+.2f}{sig}) -> {self.status}"
                + (f" ({self.why})" if self.why else ""))


def assess(facts: dict, row: dict) -> Verdict:
    std = row.get("std")
    eff = max(std or 0.0, STD_FLOOR)
    sigmas = (facts["test_error"] - row["error"]) / std if std else None
    if row.get("recipe") is None:
        return Verdict(row, facts["test_error"], "reported", sigmas, None, row.get("note") or
                       "no recipe to match")
    why = recipe_mismatches(facts, row)
    if why:
        return Verdict(row, facts["test_error"], "scaled", sigmas, None,
                       "not compared: " + "; ".join(why))
    tol = K_SIGMA * eff
    worse = facts["test_error"] > row["error"] + tol
    return Verdict(row, facts["test_error"], "WORSE" if worse else "ok", sigmas, tol,
                   f"tolerance +{tol:.2f} points = {K_SIGMA:g} x max(std, {STD_FLOOR})")
