"""The vat_tf golden values reproduced by the port, and check_upstream.py end to end."""
import os

import numpy as np
import pytest

from conftest import run_script, shared_path
from lvat_tf.upstream import fixtures, names


@pytest.fixture(scope="module")
def vat_fixture_results():
    out = {}
    for name in ("vat_tf_conv_large.npz", "vat_tf_conv_large_xi1e-6.npz"):
        path = shared_path("fixtures", "upstream", name)
        out[name] = fixtures.check_fixture(path)
    return out


def test_vat_fixture_at_xi_1e2_reproduced_within_tolerance(vat_fixture_results):
    kind, out, checks = vat_fixture_results["vat_tf_conv_large.npz"]
    assert kind == "vat"
    by_name = {c.name: c for c in checks}
    for c in checks:
        assert c.ok, str(c)
        assert c.kind != "info", str(c)  # everything is held at xi = 1e-2
    assert by_name["r_vadv min cosine"].value >= 0.9999
    assert {"ul_logit rel. error", "loss_at_r_given rel. error", "vat_loss rel. error",
            "ul_logit_eval rel. error", "ent rel. error"} <= set(by_name)


def test_vat_fixture_at_xi_1e6_holds_logits_and_loss_at_given_r(vat_fixture_results):
    _, out, checks = vat_fixture_results["vat_tf_conv_large_xi1e-6.npz"]
    by_name = {c.name: c for c in checks}
    assert by_name["ul_logit rel. error"].ok and by_name["loss_at_r_given rel. error"].ok
    # Upstream's own r at xi = 1e-6 is rounding noise: reported, not held.
    assert by_name["r_vadv min cosine"].kind == "info"
    norms = np.linalg.norm(out["r_vadv"].reshape(8, -1), axis=1)
    np.testing.assert_allclose(norms, 3.5, rtol=1e-5)


def test_check_upstream_script_on_fixture_without_outputs_and_with_wrong_outputs(tmp_path):
    src = shared_path("fixtures", "upstream", "vat_tf_conv_large.npz")
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    inputs_only = {k: v for k, v in arrays.items()
                   if k.startswith("w/") or k in ("x", "d", "epsilon", "xi", "top_bn",
                                                  "keep_prob_hidden", "num_power_iterations")}
    np.savez(tmp_path / "inputs.npz", **inputs_only)
    p = run_script("check_upstream.py", f"--fixture={tmp_path / 'inputs.npz'}",
                   f"--output={tmp_path / 'out.npz'}")
    assert p.returncode == 0, p.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as o:
        for key in ("ul_logit", "ul_logit_eval", "r_vadv", "vat_loss", "ent"):
            assert key in o.files
        np.testing.assert_allclose(o["ul_logit"], arrays["ul_logit"], rtol=1e-4, atol=1e-4)
        assert "loss_at_r_given" not in o.files  # no r_given in this fixture
    wrong = dict(arrays, vat_loss=arrays["vat_loss"] * 1.5)
    np.savez(tmp_path / "wrong.npz", **wrong)
    p = run_script("check_upstream.py", f"--fixture={tmp_path / 'wrong.npz'}")
    assert p.returncode != 0 and "outside tolerance" in p.stderr and "FAIL" in p.stdout
    p = run_script("check_upstream.py", f"--fixture={tmp_path / 'missing.npz'}")
    assert p.returncode != 0 and "--fixture" in p.stderr and "Traceback" not in p.stderr


def test_weight_loading_is_strict():
    path = shared_path("fixtures", "upstream", "vat_tf_conv_large.npz")
    with np.load(path) as f:
        w = names.classifier_weights({k: f[k] for k in f.files}, prefix="w/")
    model = names.conv_large_from_weights(w)
    model(np.zeros((1, 32, 32, 3), np.float32))
    bad = dict(w)
    bad["c3_W"] = bad["c3_W"][:, :, :, :64]
    with pytest.raises(names.UpstreamWeightsError, match="c3_W"):
        names.load_convnet_weights(model, bad)
    extra = dict(w, c10_W=np.zeros(1))
    with pytest.raises(names.UpstreamWeightsError, match="unknown"):
        names.load_convnet_weights(model, extra)


def test_check_upstream_script_on_the_lvat_vae_fixture(tmp_path):
    path = shared_path("fixtures", "upstream", "lvat_vae.npz")
    p = run_script("check_upstream.py", f"--fixture={path}", f"--output={tmp_path / 'o.npz'}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "all 8 checks within tolerance" in p.stdout and "TF1 masks replayed" in p.stdout
    with np.load(tmp_path / "o.npz") as out:
        assert out["r_adv"].shape == (8, 128)


def test_check_upstream_fails_when_a_fixture_output_is_wrong(tmp_path):
    path = shared_path("fixtures", "upstream", "lvat_vae.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["lvat_loss"] = arrays["lvat_loss"] * 1.01
    np.savez(tmp_path / "bad.npz", **arrays)
    p = run_script("check_upstream.py", f"--fixture={tmp_path / 'bad.npz'}")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "outside tolerance" in p.stderr and "lvat_loss rel. error" in p.stdout
