"""benchmark.py produces well-formed rows (timings are reported, never asserted)."""
import json

from conftest import run_script


def test_benchmark_script_rows(tmp_path):
    out = tmp_path / "bench.json"
    p = run_script("benchmark.py", "--model=tiny_mlp", "--dataset=digits", "--batch_size=8",
                   "--ul_batch_size=16", "--steps=2", "--warmup=1",
                   "--methods=baseline,vat,vat_exact,lvat_vae,lvat_glow,mat", "--vae_widths=8,16,32",
                   "--glow_levels=2", "--glow_steps=1", "--glow_width=8", f"--output={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.load(open(out))
    assert [r["method"] for r in rows] == ["baseline", "vat", "vat_exact", "lvat_vae",
                                           "lvat_glow", "mat"]
    assert rows[3]["generative"]["widths"] == [8, 16, 32]
    assert rows[4]["generative"]["num_steps"] == 1
    for r in rows:
        for k in ("method", "model", "batch_size", "ul_batch_size", "ms_per_step",
                  "images_per_s", "ratio_to_vat", "ratio_to_baseline", "gflop_per_step"):
            assert k in r
        assert r["ms_per_step"] > 0
    assert rows[1]["ratio_to_vat"] == 1.0
    # A VAT step does strictly more arithmetic than a baseline step.
    assert rows[1]["gflop_per_step"] >= rows[0]["gflop_per_step"]
    p = run_script("benchmark.py", "--methods=foo", "--model=tiny_mlp", "--dataset=digits")
    assert p.returncode != 0 and "--methods" in p.stderr


def test_mixed_precision_rows_and_direction_cosines(tmp_path):
    out = tmp_path / "bench.json"
    p = run_script("benchmark.py", "--model=tiny_cnn", "--dataset=synthetic", "--batch_size=8",
                   "--ul_batch_size=16", "--steps=1", "--warmup=1", "--methods=baseline,vat",
                   "--mixed_precision", "--direction_cosine=8", f"--output={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.load(open(out))
    assert all(r["mixed_precision"] for r in rows)
    assert rows[1]["power_iteration"] == "exact"  # forced under bfloat16
    cos = rows[0]["direction_cosine"]
    assert set(cos) == {"bfloat16_exact", "float32_exact", "float32_finite_difference"}
    assert "VAT direction vs float64 exact" in p.stdout


def test_direction_cosines_bfloat16_recovers_the_float64_direction():
    from lvat_tf.benchmark import direction_cosines
    cos = direction_cosines("tiny_cnn", "synthetic", batch_size=16)
    # float32 exact is the float64 direction; bfloat16 with float32 losses and
    # BN statistics stays close (issue target: mean cosine >= 0.95); float32
    # finite differences at xi = 1e-6 are mostly rounding noise.
    assert cos["float32_exact"]["mean"] > 0.999
    assert cos["bfloat16_exact"]["mean"] >= 0.95
    assert cos["float32_finite_difference"]["mean"] < cos["bfloat16_exact"]["mean"]
