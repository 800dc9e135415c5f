"""Training-step speed per method: ms/step, images/s, ratios, FLOPs, achieved GFLOP/s.

    python run_scripts/benchmark.py --model=mlp --dataset=mnist --output=bench.json
    python run_scripts/benchmark.py --model=conv_large --dataset=cifar10 --steps=3

Random data of the dataset's shape (no files needed); the median of --steps
timed steps after --warmup untimed ones. Each row: method, model, batch_size,
ul_batch_size, ms_per_step, images_per_s, ratio_to_baseline, ratio_to_vat,
ratio_to_upstream (with --upstream_step: upstream vat_tf's own step timed in
the same process), gflop_per_step, achieved_gflops, the matmul peak measured in
the same run, and the hardware (CPU model, ISA flags, cores, oneDNN, versions,
GPUs).

    python run_scripts/benchmark.py --model=conv_large --dataset=cifar10 --methods=baseline,vat \
        --steps=3 --warmup=1 --upstream_step
"""
import json

import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_list("methods", ["baseline", "vat", "vatent", "vat_exact", "lvat_vae", "lvat_glow",
                              "mat"],
                  "Methods to time (vat_exact = vat with --power_iteration=exact).")
flags.DEFINE_string("model", "mlp", "Classifier (--model of train.py).")
flags.DEFINE_string("dataset", "mnist", "Dataset whose image shape is used.")
flags.DEFINE_integer("batch_size", 32, "Labeled batch.")
flags.DEFINE_integer("ul_batch_size", 128, "Unlabeled batch.")
flags.DEFINE_integer("steps", 20, "Timed steps (median reported).")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocation).")
flags.DEFINE_string("output", None, "Write the rows as JSON here.")
flags.DEFINE_bool("upstream_step", False, "Also time upstream vat_tf's own training step "
                  "(--upstream_meta, a TF1 MetaGraph) in this process and report every row's "
                  "ratio to it (needs --model=conv_large and batches 32+128, upstream's).")
flags.DEFINE_string("upstream_meta", None, "Upstream's step as a MetaGraph (default: "
                    "../shared/perf/vat_tf_train_step.meta beside the checkout).")
flags.DEFINE_integer("upstream_steps", 3, "Timed upstream steps (median; one untimed first).")
flags.DEFINE_bool("jit_compile", False, "Time XLA-compiled train steps.")
flags.DEFINE_list("vae_widths", ["128", "256", "512"], "LVAT-VAE: encoder widths of the "
                  "(untrained) VAE timed (paper: 128,256,512).")
flags.DEFINE_integer("glow_levels", 3, "LVAT-Glow: L of the (untrained) Glow timed (upstream 3).")
flags.DEFINE_integer("glow_steps", 22, "LVAT-Glow: K steps per level (upstream 22).")
flags.DEFINE_integer("glow_width", 128, "LVAT-Glow: coupling width (upstream 128).")
flags.DEFINE_bool("mixed_precision", False, "Time bfloat16 (mixed) train steps; VAT-type "
                  "methods then use the exact power iteration.")
flags.DEFINE_enum("generative_dtype", None, ["float32", "bfloat16"], "LVAT: the dtype of the "
                  "decodes (train.py's flag, default float32; bfloat16 needs --mixed_precision "
                  "and LVAT-VAE).")
flags.DEFINE_integer("direction_cosine", 0, "Also measure, on this many images, the cosine of "
                     "the VAT direction in bfloat16 / float32 (exact and finite-difference) to "
                     "the float64 exact one (0 = skip).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from lvat_tf import benchmark
    from lvat_tf.regularizers import methods as method_registry

    import os

    from lvat_tf import hardware

    meta = None
    if FLAGS.upstream_step:
        if FLAGS.model != "conv_large" or (FLAGS.batch_size, FLAGS.ul_batch_size) != (32, 128):
            _common.fail("--upstream_step: upstream's step is Conv-Large with batches 32+128; "
                         "use --model=conv_large --batch_size=32 --ul_batch_size=128")
        meta = FLAGS.upstream_meta or os.path.join(os.path.dirname(_common._ROOT), "shared",
                                                   "perf", "vat_tf_train_step.meta")
        if not os.path.isfile(meta):
            _common.fail(f"--upstream_meta: {meta} does not exist")
    hw = hardware.describe()
    rows = []
    peak = benchmark.matmul_peak_gflops()
    if meta:  # first, so that it and our rows share the same machine state
        rows.append(benchmark.time_upstream_step(meta, FLAGS.upstream_steps))
    for m in FLAGS.methods:
        method, extra = (m, {}) if m != "vat_exact" else ("vat", {"power_iteration": "exact"})
        if method == "lvat_vae":
            extra["generative_arch"] = {"widths": [int(w) for w in FLAGS.vae_widths]}
        elif method == "lvat_glow":
            extra["generative_arch"] = {"num_levels": FLAGS.glow_levels,
                                        "num_steps": FLAGS.glow_steps, "width": FLAGS.glow_width}
        if method not in method_registry.names():
            _common.fail(f"--methods: unknown method {m!r}; expected some of "
                         + ",".join(method_registry.names() + ["vat_exact"]))
        if FLAGS.generative_dtype and method_registry.get_method(method).generative:
            extra["generative_dtype"] = FLAGS.generative_dtype
        try:
            row = benchmark.benchmark_method(method, FLAGS.model, FLAGS.dataset,
                                             FLAGS.batch_size, FLAGS.ul_batch_size,
                                             steps=FLAGS.steps, warmup=FLAGS.warmup,
                                             jit_compile=FLAGS.jit_compile,
                                             mixed_precision=FLAGS.mixed_precision, **extra)
        except _common.user_errors() as e:
            _common.fail(str(e))
        row["method"] = m
        rows.append(row)
    ref = {r["method"]: r["ms_per_step"] for r in rows}
    for r in rows:
        r["matmul_peak_gflops"] = round(peak, 1)
        r["hardware"] = hw
        r["ratio_to_baseline"] = round(r["ms_per_step"] / ref["baseline"], 2) \
            if "baseline" in ref else None
        r["ratio_to_vat"] = round(r["ms_per_step"] / ref["vat"], 2) if "vat" in ref else None
        r["ratio_to_upstream"] = (round(r["ms_per_step"] / ref["upstream_vat_tf"], 2)
                                  if "upstream_vat_tf" in ref else None)
    print(f"hardware: {hardware.one_line(hw)}")
    print(f"matmul peak (float32, measured): {peak:.1f} GFLOP/s")
    print("| method | model | generative | precision | batch | ms/step | images/s | x baseline | "
          "x vat | x upstream | GFLOP/step | GFLOP/s |\n" + "|---" * 12 + "|")
    for r in rows:
        gen = ",".join(f"{k}={v}" for k, v in (r["generative"] or {}).items()) or "-"
        prec = "bfloat16" if r["mixed_precision"] else "float32"
        if r["generative"] and r["generative_dtype"] != prec:
            prec += f" (decodes {r['generative_dtype']})"
        print(f"| {r['method']} | {r['model']} | {gen} | {prec} | "
              f"{r['batch_size']}+{r['ul_batch_size']} | {r['ms_per_step']} | "
              f"{r['images_per_s']} | {r['ratio_to_baseline']} | {r['ratio_to_vat']} | "
              f"{r['ratio_to_upstream']} | {r['gflop_per_step']} | {r['achieved_gflops']} |")
    if FLAGS.direction_cosine:
        cos = benchmark.direction_cosines(FLAGS.model, FLAGS.dataset, FLAGS.direction_cosine)
        print(f"\nVAT direction vs float64 exact, {FLAGS.direction_cosine} images "
              f"(cosine mean / min):")
        for k, v in cos.items():
            print(f"  {k}: {v['mean']:.4f} / {v['min']:.4f}")
        for r in rows:
            r["direction_cosine"] = cos
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    app.run(main)
