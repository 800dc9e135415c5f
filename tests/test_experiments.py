"""Seeds and error bars: the seed grid, the aggregation, the table, reproduce.py --seeds."""
import json
import math

import pytest

from conftest import run_script
from lvat_tf import experiments


def test_seed_grid_and_run_dirs():
    assert experiments.seed_grid(1, 1) == [(1, 1)]
    assert experiments.seed_grid(3, 1, 3) == [(3, 1), (4, 1), (5, 1)]
    assert experiments.seed_grid(1, 7, 2, [1, 2]) == [(1, 1), (2, 1), (1, 2), (2, 2)]
    with pytest.raises(ValueError):
        experiments.seed_grid(1, 1, 0)
    assert experiments.run_dir("o", "vat", 1, 1, single=True) == "o/vat"
    assert experiments.run_dir("o", "vat", 2, 3, single=False) == "o/vat/seed2-data3"
    # Only the recipe's own seed keeps the flat layout; --seed=3 --seeds=1 gets seed3-data1.
    assert experiments.single_layout([(1, 1)], {"seed": 1, "dataset_seed": 1})
    assert not experiments.single_layout([(3, 1)], {"seed": 1, "dataset_seed": 1})
    assert not experiments.single_layout([(1, 2)], {"seed": 1})
    assert not experiments.single_layout([(1, 1), (2, 1)], {"seed": 1})


def test_mean_std_is_the_sample_std_and_rows_count_collapses():
    m, s = experiments.mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3) and s == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (
        2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert experiments.mean_std([5.0]) == (5.0, None) and experiments.mean_std([]) == (None, None)
    runs = [dict(seed=s, dataset_seed=1, test_error=e, collapsed=c, num_iterations=10,
                 cpu_minutes=1.0, terms={"vat_loss": t}) for s, e, c, t in (
                     (2, 30.0, True, 0.1), (1, 10.0, False, 0.3))]
    row = experiments.make_row("vat", "vat", "exact", 2.0, runs)
    assert row["num_runs"] == 2 and row["num_collapsed"] == 1 and row["test_error"] == 20.0
    assert row["test_error_std"] == pytest.approx(14.14, abs=0.01)
    assert [r["seed"] for r in row["runs"]] == [1, 2]  # sorted
    table = experiments.render_table("desc", [row])
    assert "| vat | vat | exact | 2.0 | 2 | 20.00 ± 14.14 | 1-1: 10.00, 2-1: 30.00 (C) | 1/2 |" in table
    assert row["terms"] == {"vat_loss": 0.2} and "| vat_loss 0.2 |" in table


def _row(variant, errors):
    runs = [dict(seed=s, dataset_seed=d, test_error=e, collapsed=False, num_iterations=10)
            for (s, d), e in errors.items()]
    return experiments.make_row(variant, variant, "exact", 1.0, runs)


def test_paired_differences_pair_runs_by_seed_and_labeled_subset():
    rows = [_row("baseline", {(1, 1): 30.0, (2, 1): 34.0, (3, 1): 32.0, (1, 2): 50.0}),
            _row("vat", {(1, 1): 28.0, (2, 1): 33.0, (3, 1): 33.0}),
            # seed 4 has no baseline run: not a pair; (1, 2) pairs with the baseline's (1, 2)
            _row("lvat", {(1, 1): 27.0, (4, 1): 1.0, (1, 2): 45.0})]
    paired = experiments.paired_differences(rows, ["baseline", "vat", "absent"])
    got = {(p["variant"], p["reference"]): p for p in paired}
    # vat against baseline once: the reverse pair is not listed again.
    assert set(got) == {("vat", "baseline"), ("lvat", "baseline"), ("lvat", "vat")}
    p = got[("vat", "baseline")]
    assert p["pairs"] == [[1, 1, -2.0], [2, 1, -1.0], [3, 1, 1.0]] and p["num_lower"] == 2
    assert p["difference"] == pytest.approx(-2 / 3, abs=0.01)
    assert p["difference_std"] == pytest.approx(experiments.mean_std([-2, -1, 1])[1], abs=0.01)
    # The paired t-test is scipy's on the same pairs.
    from scipy import stats
    ref = stats.ttest_rel([28.0, 33.0, 33.0], [30.0, 34.0, 32.0])
    assert p["t"] == pytest.approx(ref.statistic, abs=0.01)
    assert p["p_value"] == pytest.approx(ref.pvalue, abs=1e-4)
    p = got[("lvat", "baseline")]
    assert p["num_pairs"] == 2 and [x[2] for x in p["pairs"]] == [-3.0, -5.0]
    p = got[("lvat", "vat")]  # one common pair: no std
    assert p["pairs"] == [[1, 1, -1.0]] and p["difference_std"] is None and p["t"] is None
    table = experiments.render_paired_table(paired)
    assert ("| vat | baseline | 3 | -0.67 ± 1.53 | 1-1: -2.00, 2-1: -1.00, 3-1: +1.00 | 2/3 | "
            "-0.76 (0.529) |") in table
    assert "| lvat | vat | 1 | -1.00 | 1-1: -1.00 | 1/1 | - |" in table
    # Identical differences: no spread, no t.
    same = experiments.paired_differences([_row("a", {(1, 1): 1.0, (2, 1): 2.0}),
                                           _row("b", {(1, 1): 2.0, (2, 1): 3.0})], ["a"])
    assert same[0]["difference_std"] == 0 and same[0]["t"] is None
    assert experiments.render_paired_table([]) == ""


def test_recipe_references_default_to_the_first_variant_and_are_checked():
    from lvat_tf.recipes import RECIPES, Recipe

    for name, recipe in RECIPES.items():
        names = [v for v, _ in recipe.variants]
        assert recipe.references() and set(recipe.references()) <= set(names), name
    assert RECIPES["cifar10_4k"].references() == ("baseline", "vat")
    r = Recipe(name="x", description="x", base={}, variants=(("a", {}), ("b", {})))
    assert r.references() == ("a",)
    with pytest.raises(ValueError, match="paired_with names unknown variant 'c'"):
        Recipe(name="x", description="x", base={}, variants=(("a", {}),), paired_with=("c",))


def _twin_recipe(**kw):
    from lvat_tf.recipes import RECIPES, Recipe

    base = dict(RECIPES["digits100"].base, num_epochs=1, epoch_decay_start=1,
                num_iter_per_epoch=10)
    fields = dict(name="twins", description="twins", base=base,
                  variants=(("baseline", dict(method="baseline")),
                            ("baseline_bf16", dict(method="baseline", mixed_precision=True)),
                            ("vat", dict(method="vat"))),
                  bfloat16_twins=(("baseline", "baseline_bf16", "a test"),))
    fields.update(kw)
    return Recipe(**fields)


def test_bfloat16_twins_stand_in_only_where_asked_and_verified():
    from lvat_tf.recipes import RECIPES, with_bfloat16_twins

    r = _twin_recipe()
    both = ["baseline", "vat"]
    assert with_bfloat16_twins(r, both, "auto", has_amx=True) == (
        ["baseline_bf16", "vat"], {"baseline": "baseline_bf16"})
    assert with_bfloat16_twins(r, both, "auto", has_amx=False) == (both, {})
    assert with_bfloat16_twins(r, both, "on", has_amx=False)[0] == ["baseline_bf16", "vat"]
    assert with_bfloat16_twins(r, both, "off", has_amx=True) == (both, {})
    # Asked for both the variant and its twin: the twin runs once.
    assert with_bfloat16_twins(r, ["baseline", "baseline_bf16"], "on", False)[0] == [
        "baseline_bf16"]
    with pytest.raises(ValueError, match="--bfloat16"):
        with_bfloat16_twins(r, both, "maybe", True)
    # A twin must be its variant under mixed_precision and nothing else, with evidence.
    with pytest.raises(ValueError, match="not baseline under mixed_precision alone"):
        _twin_recipe(bfloat16_twins=(("baseline", "vat", "x"),))
    with pytest.raises(ValueError, match="names no evidence"):
        _twin_recipe(bfloat16_twins=(("baseline", "baseline_bf16", ""),))
    with pytest.raises(ValueError, match="unknown variant"):
        _twin_recipe(bfloat16_twins=(("baseline", "nope", "x"),))
    assert RECIPES["mnist100_4k"].bfloat16_twins[0][:2] == ("vat_eps5_exact",
                                                           "vat_eps5_exact_bf16")
    # CIFAR-10: VAT's twin was inside the float32 spread (3 seeds each), the baseline's was
    # higher in every seed, so only VAT's is listed.
    assert [t[:2] for t in RECIPES["cifar10_4k"].bfloat16_twins] == [("vat", "vat_bf16")]
    assert with_bfloat16_twins(RECIPES["cifar10_4k"], both, "auto", has_amx=True) == (
        ["baseline", "vat_bf16"], {"vat": "vat_bf16"})


def test_run_recipe_runs_the_twin_in_place_of_its_variant(tmp_path):
    r = _twin_recipe()
    _, summary = experiments.run_recipe(r, str(tmp_path), variants=["baseline"],
                                        bfloat16="auto", has_amx=True, attacks=[])
    assert [row["variant"] for row in summary["rows"]] == ["baseline_bf16"]
    cfg = json.load(open(tmp_path / "twins" / "baseline_bf16" / "config.json"))
    assert cfg["mixed_precision"] is True
    assert not (tmp_path / "twins" / "baseline").exists()
    _, summary = experiments.run_recipe(r, str(tmp_path), variants=["baseline"],
                                        bfloat16="auto", has_amx=False, attacks=[])
    assert json.load(open(tmp_path / "twins" / "baseline" / "config.json"))[
        "mixed_precision"] is False
    with pytest.raises(experiments.ExperimentError, match="--bfloat16"):
        experiments.run_recipe(r, str(tmp_path), bfloat16="sometimes")


def test_reproduce_rejects_an_unknown_paired_with_variant(tmp_path):
    p = run_script("reproduce.py", "--recipe=digits100", "--paired_with=vat,nope",
                   f"--output_dir={tmp_path}")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].endswith(
        "--paired_with: unknown variant 'nope'; expected some of "
        "baseline,vat,vatent,vat_exact,lvat_vae,lvat_glow")
    assert not (tmp_path / "digits100").exists()  # nothing ran


def test_reproduce_runs_every_seed_and_reports_mean_and_std(tmp_path):
    p = run_script("reproduce.py", "--recipe=digits100", "--variants=baseline", "--seeds=2",
                   "--dataset_seeds=1,2", "--num_epochs=1", "--epoch_decay_start=1",
                   "--num_iter_per_epoch=20", f"--output_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.load(open(tmp_path / "digits100" / "summary.json"))
    (row,) = summary["rows"]
    assert row["num_runs"] == 4 and summary["seed_grid"] == [[1, 1], [2, 1], [1, 2], [2, 2]]
    assert [(r["seed"], r["dataset_seed"]) for r in row["runs"]] == [(1, 1), (2, 1), (1, 2),
                                                                     (2, 2)]
    errs = [r["test_error"] for r in row["runs"]]
    assert row["test_error"] == pytest.approx(sum(errs) / 4, abs=0.01)
    assert row["test_error_std"] is not None and "±" in p.stdout
    for s, d in ((1, 1), (2, 2)):
        res = json.load(open(tmp_path / "digits100" / "baseline" / f"seed{s}-data{d}" /
                             "results.json"))
        assert res["seed"] == s and res["config"]["dataset_seed"] == d and "collapse" in res
    p = run_script("reproduce.py", "--recipe=digits100", "--seeds=0", f"--output_dir={tmp_path}")
    assert p.returncode == 1 and "--seeds" in p.stderr.strip().splitlines()[-1]


def test_every_recipe_variant_is_a_valid_config():
    """Each row of every recipe resolves and validates as a run config (no training)."""
    from lvat_tf.config import make_config
    from lvat_tf.recipes import RECIPES

    for name, recipe in RECIPES.items():
        names = [v for v, _ in recipe.variants]
        assert len(names) == len(set(names)), name
        for variant, overrides in recipe.variants:
            cfg = make_config(**dict(recipe.base, **overrides, log_dir="x"))
            assert cfg.method == overrides.get("method", recipe.base.get("method", cfg.method))
