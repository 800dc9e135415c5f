"""regression.py: matching runs to published cells, scaled vs full recipes, the recipe flag files."""
import glob
import json
import os

import pytest

from conftest import ROOT, run_script
from lvat_tf import config as config_lib
from lvat_tf import regression
from lvat_tf.data.preprocessing import Preprocessor

RECIPES = os.path.join(ROOT, "run_scripts", "recipes")


def read_flagfile(path):
    """An absl flag file as {flag: value} (``--x`` -> True, ``--nox`` -> False)."""
    out = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line[2:].partition("=")
        if not _:
            out[key[2:] if key.startswith("no") else key] = not key.startswith("no")
        else:
            out[key] = value
    return out


def _typed(cfg_fields, flags):
    types = {f.name: f.type for f in __import__("dataclasses").fields(config_lib.Config)}
    out = {}
    for k, v in flags.items():
        t = str(types[k])
        if isinstance(v, bool):
            out[k] = v
        elif "int" in t:
            out[k] = int(v)
        elif "float" in t:
            out[k] = float(v)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(RECIPES, "*.flags"))
                                        if not os.path.basename(p).startswith(("vae_", "glow_"))))
def test_each_recipe_flag_file_is_the_full_recipe_of_a_published_cell(path, tmp_path):
    flags = read_flagfile(path)
    if "generative_model_dir" in flags:
        flags["generative_model_dir"] = str(tmp_path)  # must exist to validate
    cfg = config_lib.make_config(**_typed(None, flags))
    facts = regression.config_facts(cfg)
    rows = [r for r in regression.matching_rows(facts, regression.load_table())
            if r.get("recipe")]
    assert rows, f"{os.path.basename(path)} matches no published cell with a recipe"
    for r in rows:
        assert regression.recipe_mismatches(facts, r) == [], (os.path.basename(path), r)


def _fake_run(root, test_error, **over):
    """A finished run directory following the MNIST-100 reference recipe (6,000 updates)."""
    values = dict(dataset="mnist", model="mlp", method="vat", num_labeled_examples=100,
                  num_epochs=15, epoch_decay_start=15, num_iter_per_epoch=400, epsilon=5.0,
                  log_dir=str(root))
    values.update(over)
    cfg = config_lib.make_config(**values)
    config_lib.save_config(cfg, str(root))
    Preprocessor().save(os.path.join(str(root), "preprocessing.npz"))
    with open(os.path.join(str(root), "results.json"), "w") as f:
        json.dump({"test_error": test_error}, f)
    return str(root)


def test_full_recipe_runs_are_compared_and_scaled_ones_reported(tmp_path):
    ok = _fake_run(tmp_path / "ok", 4.9)
    facts = regression.run_facts(ok)
    verdicts = [regression.assess(facts, r) for r in
                regression.matching_rows(facts, regression.load_table())]
    by_status = {v.status: v for v in verdicts}
    assert by_status["ok"].row["error"] == 4.75 and by_status["ok"].tolerance == pytest.approx(0.6)
    assert by_status["reported"].row["error"] == 1.36  # the VAT paper cell has no recipe
    bad = _fake_run(tmp_path / "bad", 6.0)
    scaled = _fake_run(tmp_path / "scaled", 30.0, num_epochs=5, epoch_decay_start=5)
    p = run_script("regression.py", f"--log_dir={ok}", f"--runs={scaled}",
                   f"--output={tmp_path / 'v.json'}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "-> ok" in p.stdout and "-> scaled (not compared: updates 2000 (recipe 6000))" in p.stdout
    p = run_script("regression.py", f"--log_dir={bad}")
    assert p.returncode != 0 and "-> WORSE" in p.stdout and "worse than published" in p.stderr
    p = run_script("regression.py", f"--log_dir={tmp_path / 'none'}")
    assert p.returncode != 0 and "--log_dir" in p.stderr and "Traceback" not in p.stderr
