"""analyze.py renders every figure from tiny runs (valid PNGs of sensible size)."""
import numpy as np
import tensorflow as tf

from conftest import run_script, tiny_config
from lvat_tf.analysis import learning_curves, run_perturbations, seed_curves, unique_labels
from lvat_tf.training import run


def test_unique_labels_tell_same_named_seed_directories_apart():
    # reproduce.py names every run seed<S>-data<D> under its variant: the
    # method, then the parent directory, must separate them in the legends.
    runs = [dict(log_dir="r/cifar10_4k/vat/seed1-data1", method="vat"),
            dict(log_dir="r/cifar10_4k/lvat_glow/seed1-data1/", method="lvat_glow")]
    assert unique_labels(runs) == ["seed1-data1 (vat)", "seed1-data1 (lvat_glow)"]
    runs = [dict(log_dir="r/cifar10_4k/vat/seed1-data1", method="vat"),
            dict(log_dir="r/cifar10_4k/vat_e5/seed1-data1", method="vat"),
            dict(log_dir="r/cifar10_4k/vat/seed2-data1", method="vat")]
    assert unique_labels(runs) == ["vat/seed1-data1 (vat)", "vat_e5/seed1-data1 (vat)",
                                   "seed2-data1 (vat)"]
    runs = [dict(log_dir="a/x/vat/seed1-data1", method="vat"),
            dict(log_dir="b/x/vat/seed1-data1", method="vat")]
    assert unique_labels(runs) == ["a/x/vat/seed1-data1 (vat)", "b/x/vat/seed1-data1 (vat)"]


def _write_scalars(log_dir, split, tag, points):
    writer = tf.summary.create_file_writer(str(log_dir / "tb" / split))
    with writer.as_default():
        for step, value in points:
            tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_seed_curves_average_the_seeds_at_their_common_steps(tmp_path):
    # Seed 2 stopped early and wrote step 20 twice (a resume): the last value counts,
    # and the line is drawn only where every seed logged.
    _write_scalars(tmp_path / "a1", "train", "xe_loss", [(10, 1.0), (20, 0.5), (30, 0.2)])
    _write_scalars(tmp_path / "a2", "train", "xe_loss", [(10, 3.0), (20, 9.0), (20, 1.5)])
    _write_scalars(tmp_path / "b1", "test", "test_accuracy", [(10, 0.4), (30, 0.6)])
    _write_scalars(tmp_path / "b1", "train", "xe_loss", [(10, 2.0)])
    png = tmp_path / "curves.png"
    got = seed_curves([("a", [str(tmp_path / "a1"), str(tmp_path / "a2")]),
                       ("b", [str(tmp_path / "b1")])], str(png))
    a = got["a"]["train/xe_loss"]
    assert a["steps"] == [10, 20] and a["runs"] == 2
    np.testing.assert_allclose(a["mean"], [2.0, 1.0])
    np.testing.assert_allclose(a["min"], [1.0, 0.5])
    np.testing.assert_allclose(a["max"], [3.0, 1.5])
    assert "test/accuracy" not in got["a"]  # a's runs logged no test accuracy
    b = got["b"]["test/accuracy"]
    assert b["steps"] == [10, 30] and b["runs"] == 1
    np.testing.assert_allclose(b["mean"], [0.4, 0.6])
    assert png.stat().st_size > 10_000
    # Nothing to draw: no file, empty result.
    assert seed_curves([("c", [str(tmp_path / "none")])], str(tmp_path / "x.png")) == {}
    assert not (tmp_path / "x.png").exists()


def test_analyze_renders_the_figures_for_lvat_and_vat_runs(tmp_path):
    # Both runs named as reproduce.py names them, so their labels must come apart.
    for method, extra in (("lvat_glow", {"glow_train_steps": 8}), ("vat", {})):
        cfg = tiny_config(str(tmp_path / method / "seed1-data1"), method=method, num_epochs=1,
                          epoch_decay_start=0, num_iter_per_epoch=3, **extra)
        run.train_and_evaluate(cfg, verbose=0)
    out = tmp_path / "figs"
    p = run_script("analyze.py", f"--log_dir={tmp_path / 'lvat_glow' / 'seed1-data1'}",
                   f"--compare={tmp_path / 'vat' / 'seed1-data1'}", f"--output_dir={out}", "--num_examples=16")
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("fig5_consistency_cost.png", "fig6_distance.png", "fig7_images.png",
                 "fig8_reconstruction_error.png", "learning_curves.png"):
        img = tf.io.decode_png(tf.io.read_file(str(out / name)))
        assert img.shape[0] >= 200 and img.shape[1] >= 300, name
        assert np.asarray(img).std() > 0, name  # not a blank canvas
    page = (out / "index.html").read_text()
    assert page.count("<img") == 5
    assert "seed1-data1 (lvat_glow)" in page and "seed1-data1 (vat)" in page
    runs = [("a", str(tmp_path / "lvat_glow" / "seed1-data1")),
            ("b", str(tmp_path / "vat" / "seed1-data1"))]
    assert learning_curves(runs, str(tmp_path / "curves.png")) == 2
    p = run_script("analyze.py", f"--log_dir={tmp_path / 'vat' / 'seed1-data1'}")
    assert p.returncode != 0 and "--output_dir" in p.stderr and "Traceback" not in p.stderr
    # The same perturbation with the batch's own BN statistics (training's mode): still
    # ||x - x_adv|| = epsilon per sample, a different cost than with the moving averages.
    vat_dir = str(tmp_path / "vat" / "seed1-data1")
    moving = run_perturbations(vat_dir, 16)
    batch = run_perturbations(vat_dir, 16, bn_mode="batch")
    np.testing.assert_allclose(batch["dist"], cfg.epsilon, rtol=1e-4)
    assert (batch["cost"] >= 0).all() and not np.allclose(batch["cost"], moving["cost"])
