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
                   "--ul_batch_size=16", "--steps=1", "--warmup=1", "--methods=baseline,vat,mat",
                   "--mixed_precision", "--direction_cosine=8", f"--output={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.load(open(out))
    assert all(r["mixed_precision"] for r in rows)
    assert rows[1]["power_iteration"] == "exact"  # forced under bfloat16
    # MAT's float32 mixture takes the bfloat16 features (it raised a dtype error before).
    assert rows[2]["method"] == "mat" and rows[2]["ms_per_step"] > 0
    cos = rows[0]["direction_cosine"]
    assert set(cos) == {"bfloat16_exact", "float32_exact", "float32_finite_difference"}
    assert "VAT direction vs float64 exact" in p.stdout


def test_lvat_vae_step_with_bfloat16_decodes(tmp_path):
    out = tmp_path / "bench.json"
    p = run_script("benchmark.py", "--model=tiny_cnn", "--dataset=synthetic", "--batch_size=8",
                   "--ul_batch_size=16", "--steps=1", "--warmup=1", "--methods=lvat_vae,vat",
                   "--vae_widths=8,16,32", "--mixed_precision", "--generative_dtype=bfloat16",
                   f"--output={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.load(open(out))
    # The flag reaches the LVAT row only; VAT has no decoder.
    assert [r["generative_dtype"] for r in rows] == ["bfloat16", "float32"]
    assert rows[0]["ms_per_step"] > 0 and "| lvat_vae |" in p.stdout
    p = run_script("benchmark.py", "--model=tiny_cnn", "--dataset=synthetic", "--steps=1",
                   "--warmup=1", "--methods=lvat_vae", "--generative_dtype=bfloat16")
    assert p.returncode != 0 and "--generative_dtype" in p.stderr and "Traceback" not in p.stderr


def test_direction_cosines_bfloat16_recovers_the_float64_direction():
    from lvat_tf.benchmark import direction_cosines
    cos = direction_cosines("tiny_cnn", "synthetic", batch_size=16)
    # float32 exact is the float64 direction; bfloat16 with float32 losses and
    # BN statistics stays close (issue target: mean cosine >= 0.95); float32
    # finite differences at xi = 1e-6 are mostly rounding noise.
    assert cos["float32_exact"]["mean"] > 0.999
    assert cos["bfloat16_exact"]["mean"] >= 0.95
    assert cos["float32_finite_difference"]["mean"] < cos["bfloat16_exact"]["mean"]


def test_rows_carry_the_hardware_and_the_upstream_step_needs_its_shape(tmp_path):
    from lvat_tf import hardware
    out = tmp_path / "bench.json"
    p = run_script("benchmark.py", "--model=tiny_mlp", "--dataset=digits", "--batch_size=8",
                   "--ul_batch_size=16", "--steps=1", "--warmup=1", "--methods=baseline",
                   f"--output={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = json.load(open(out))
    hw = row["hardware"]
    assert set(hw) == {"cpu_model", "cpu_flags", "cores", "onednn", "tensorflow", "keras", "gpus"}
    assert hw["cores"] >= 1 and set(hw["cpu_flags"]) <= set(hardware.RELEVANT_FLAGS)
    assert "hardware: " + hw["cpu_model"] in p.stdout and "x upstream" in p.stdout
    assert row["ratio_to_upstream"] is None
    with open("/proc/cpuinfo") as f:
        text = f.read()
    assert ("amx_bf16" in text.split()) == ("amx_bf16" in hw["cpu_flags"])
    p = run_script("benchmark.py", "--model=mlp", "--dataset=mnist", "--upstream_step")
    assert p.returncode == 1 and "--upstream_step" in p.stderr.strip().splitlines()[-1]


def test_upstream_step_is_timed_in_process():
    import os
    from conftest import shared_path
    from lvat_tf.benchmark import time_upstream_step
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config
    meta = shared_path("perf", "vat_tf_train_step.meta")
    # As after any training run in this process: op determinism on (upstream's graph
    # has unseeded random ops; the timer lifts it for its own session and restores it).
    tf.config.experimental.enable_op_determinism()
    row = time_upstream_step(meta, steps=1, warmup=0)
    assert tf_config.is_op_determinism_enabled()
    assert row["method"] == "upstream_vat_tf" and row["ms_per_step"] > 0
    assert (row["batch_size"], row["ul_batch_size"]) == (32, 128) and os.path.isfile(meta)


def test_bfloat16_warning_only_without_bfloat16_hardware(monkeypatch):
    from lvat_tf import hardware
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx2", "fma"])
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    msg = hardware.bfloat16_warning()
    assert msg and "\n" not in msg and "--mixed_precision" in msg and "slower" in msg
    assert hardware.bfloat16_warning(have_gpu=True) is None
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx512_bf16", "amx_bf16"])
    assert hardware.bfloat16_warning() is None
