"""analyze.py renders every figure from tiny runs (valid PNGs of sensible size)."""
import numpy as np
import tensorflow as tf

from conftest import run_script, tiny_config
from lvat_tf.analysis import learning_curves, unique_labels
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
