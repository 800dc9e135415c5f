"""The cifar10_4k recipe's code path on a tiny synthetic stand-in: shared generative models
trained once with their quality report, every variant on the same budget, resume, --nozca."""
import dataclasses
import json
import os

import numpy as np
import pytest

from lvat_tf import experiments
from lvat_tf.config import make_config
from lvat_tf.data import pipeline, registry
from lvat_tf.generative import quality
from lvat_tf.generative.model_dir import load
from lvat_tf.recipes import RECIPES
from lvat_tf.regularizers import methods

TINY_GENERATIVE = {
    "vae": dict(widths=(4, 8, 8), latent_dim=8, num_epochs=1, batch_size=16,
                max_iter_per_epoch=3, aug_trans=False),
    "glow": dict(num_levels=2, flow_steps=1, width=4, batch_size=8, num_steps=8, is_aug=False,
                 log_every=4),
}


def _tiny_cifar_recipe():
    """cifar10_4k with its methods and epsilons, on the synthetic dataset.

    One variant per method: lvat_glow_e15 differs from lvat_glow only in epsilon,
    vat_bnjoint from vat only in --vat_bn (tested in test_vat_bn.py), the _bf16 rows only
    in --mixed_precision (tested in test_training.py; so the recipe's bfloat16 twin listing,
    tested in test_experiments.py, is dropped with them).
    """
    r = RECIPES["cifar10_4k"]
    base = dict(r.base, dataset="synthetic", model="tiny_cnn", num_labeled_examples=20,
                batch_size=8, ul_batch_size=8, num_epochs=3, epoch_decay_start=2,
                num_iter_per_epoch=2, eval_freq=3, num_eval_examples=40, finetune_iter=2,
                eval_batch_size=50)
    variants = tuple(v for v in r.variants if v[0] not in ("lvat_glow_e15", "vat_bnjoint",
                                                           "baseline_bf16", "vat_bf16"))
    return dataclasses.replace(r, base=base, variants=variants, generative=TINY_GENERATIVE,
                               bfloat16_twins=())


def test_cifar10_4k_recipe_is_the_issue_settings():
    r = RECIPES["cifar10_4k"]
    variants = dict(r.variants)
    assert list(variants) == ["baseline", "vat", "lvat_vae", "lvat_glow", "lvat_glow_e15",
                              "vat_bnjoint", "baseline_bf16", "vat_bf16"]
    cfgs = {n: make_config(**dict(r.base, **o, log_dir="x")) for n, o in r.variants}
    assert {n: c.epsilon for n, c in cfgs.items()} == {
        "baseline": cfgs["baseline"].epsilon, "vat": 10.0, "lvat_vae": 1.0, "lvat_glow": 1.0,
        "lvat_glow_e15": 1.5, "vat_bnjoint": 10.0, "baseline_bf16": cfgs["baseline"].epsilon,
        "vat_bf16": 10.0}
    assert cfgs["vat_bnjoint"].vat_bn == "joint" and cfgs["vat"].vat_bn == "batch"
    # The bfloat16 rows: mixed precision, and VAT on the exact power iteration it implies.
    assert [n for n, c in cfgs.items() if c.mixed_precision] == ["baseline_bf16", "vat_bf16"]
    assert cfgs["vat_bf16"].power_iteration == "exact"
    assert all(not c.zca and c.num_labeled_examples == 4000 and c.dataset == "cifar10"
               for c in cfgs.values())
    # One budget and one classifier for every variant; the decay is the last third.
    assert len({(c.model, c.num_iterations, c.batch_size, c.ul_batch_size)
                for c in cfgs.values()}) == 1
    c = cfgs["vat"]
    assert (c.num_epochs - c.epoch_decay_start) * 3 == c.num_epochs and c.mom2 == 0.5
    assert set(r.generative) == {"vae", "glow"}


def test_nozca_gives_cifar10_vat_no_whitening():
    spec = registry.get_spec("cifar10")
    x = np.random.RandomState(0).randint(0, 256, (50, 32, 32, 3)).astype(np.uint8)
    vat = methods.input_needs("vat")
    assert pipeline.needs_fitted_preprocessing(spec, vat)
    assert not pipeline.needs_fitted_preprocessing(spec, methods.input_needs("vat", zca=False))
    prep = pipeline.make_preprocessor(spec, methods.input_needs("vat", zca=False), x)
    assert not prep.uses_zca
    np.testing.assert_allclose(prep(x), x.astype(np.float32) / 255.0 - 0.5, atol=1e-6)
    assert pipeline.make_preprocessor(spec, vat, x).uses_zca  # vat_tf's default kept
    assert not pipeline.make_preprocessor(spec, methods.input_needs("lvat_vae"), x).uses_zca


def test_recipe_trains_generative_models_once_and_shares_them(tmp_path):
    recipe = _tiny_cifar_recipe()
    table, summary = experiments.run_recipe(recipe, str(tmp_path), num_seeds=2)
    out = tmp_path / "cifar10_4k"
    rows = {r["variant"]: r for r in summary["rows"]}
    assert list(rows) == ["baseline", "vat", "lvat_vae", "lvat_glow"]
    assert all(r["num_runs"] == 2 and r["num_iterations"] == 6 for r in rows.values())
    assert all(r["test_error_std"] is not None for r in rows.values())
    for kind, variant in (("vae", "lvat_vae"), ("glow", "lvat_glow")):
        gen_dir = out / "generative" / kind
        assert (gen_dir / "generative.json").is_file()
        info = summary["generative"][kind]
        assert info["dir"] == str(gen_dir) and info["settings"] == TINY_GENERATIVE[kind]
        q = json.loads((gen_dir / "quality.json").read_text())
        assert q == info["quality"]
        assert q["num_images"] == 200  # the synthetic test set (1,000 on CIFAR-10)
        assert q["reconstruction_l2"]["mean"] > 0
        assert sum(q["reconstruction_l2"]["histogram"]["counts"]) == q["num_images"]
        assert ("vae_reconstruction_nats" in q) == (kind == "vae")
        assert ("glow_bits_per_dim" in q) == (kind == "glow")
        for seed in (1, 2):
            run = out / variant / f"seed{seed}-data1"
            cfg = json.loads((run / "config.json").read_text())
            assert cfg["generative_model_dir"] == str(gen_dir)
            assert not (run / "generative").exists()  # no per-run generative model
    assert "Generative models" in table and "| vae |" in table and "| glow |" in table
    # Every variant paired with the recipe's references (baseline, VAT) over both seeds.
    paired = {(p["variant"], p["reference"]): p for p in summary["paired"]}
    assert set(paired) == {("vat", "baseline"), ("lvat_vae", "baseline"),
                           ("lvat_glow", "baseline"), ("lvat_vae", "vat"), ("lvat_glow", "vat")}
    assert all(p["num_pairs"] == 2 for p in paired.values())
    p = paired[("lvat_glow", "vat")]
    assert p["difference"] == pytest.approx(
        rows["lvat_glow"]["test_error"] - rows["vat"]["test_error"], abs=0.02)
    assert "Paired by seed" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000  # every variant, over seeds
    assert json.loads((out / "summary.json").read_text())["generative"].keys() == {"vae", "glow"}

    # Rerun: everything resumes finished, the generative models are not retrained.
    stamp = os.path.getmtime(out / "generative" / "glow" / "model.weights.h5")
    _, again = experiments.run_recipe(recipe, str(tmp_path), num_seeds=2)
    assert os.path.getmtime(out / "generative" / "glow" / "model.weights.h5") == stamp
    assert [r["test_error"] for r in again["rows"]] == [r["test_error"] for r in summary["rows"]]

    # Asking for another generative model over the trained one is refused in one line.
    other = dataclasses.replace(recipe, generative=dict(
        TINY_GENERATIVE, glow=dict(TINY_GENERATIVE["glow"], width=6)))
    with pytest.raises(experiments.ExperimentError, match="width=4.*asks 6"):
        experiments.run_recipe(other, str(tmp_path), variants=["lvat_glow"], num_seeds=2)


def test_quality_reconstruction_matches_a_direct_computation(tmp_path):
    info = experiments.prepare_generative("vae", "synthetic", None, TINY_GENERATIVE["vae"],
                                          str(tmp_path / "vae"))
    model, _ = load(str(tmp_path / "vae"))
    from lvat_tf.generative.train_vae import training_images
    _, x_test, _ = training_images("synthetic", None)
    mu, _ = model.encode(x_test, training=False)
    direct = np.linalg.norm((x_test - model.decode(mu, training=False).numpy()).reshape(
        len(x_test), -1), axis=1)
    assert info["quality"]["reconstruction_l2"]["mean"] == pytest.approx(direct.mean(), rel=1e-4)
    assert info["quality"]["latent_dim"] == 8
    again = quality.evaluate(model, "vae", x_test)
    assert again["reconstruction_l2"]["mean"] == pytest.approx(direct.mean(), rel=1e-4)
    with pytest.raises(ValueError, match="vae|glow"):
        quality.evaluate(model, "gan", x_test)
