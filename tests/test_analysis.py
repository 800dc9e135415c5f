"""analyze.py renders every figure from tiny runs (valid PNGs of sensible size)."""
import numpy as np
import tensorflow as tf

from conftest import run_script, tiny_config
from lvat_tf.training import run


def test_analyze_renders_the_figures_for_lvat_and_vat_runs(tmp_path):
    for method, extra in (("lvat_glow", {"glow_train_steps": 8}), ("vat", {})):
        cfg = tiny_config(str(tmp_path / method), method=method, num_epochs=1,
                          epoch_decay_start=0, num_iter_per_epoch=3, **extra)
        run.train_and_evaluate(cfg, verbose=0)
    out = tmp_path / "figs"
    p = run_script("analyze.py", f"--log_dir={tmp_path / 'lvat_glow'}",
                   f"--compare={tmp_path / 'vat'}", f"--output_dir={out}", "--num_examples=16")
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("fig5_consistency_cost.png", "fig6_distance.png", "fig7_images.png",
                 "fig8_reconstruction_error.png", "learning_curves.png"):
        img = tf.io.decode_png(tf.io.read_file(str(out / name)))
        assert img.shape[0] >= 200 and img.shape[1] >= 300, name
        assert np.asarray(img).std() > 0, name  # not a blank canvas
    page = (out / "index.html").read_text()
    assert page.count("<img") == 5 and "lvat_glow" in page
    p = run_script("analyze.py", f"--log_dir={tmp_path / 'vat'}")
    assert p.returncode != 0 and "--output_dir" in p.stderr and "Traceback" not in p.stderr
