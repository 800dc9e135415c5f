"""Float32 VAT step with a hand-written BN gradient (tf.custom_gradient, statistics recomputed in
the gradient so higher derivatives stay right), against the library's BN, same process (issue 15)."""
import json, os, sys
import tensorflow as tf
from lvat_tf import benchmark

variant = sys.argv[1]
if variant == "cgbn":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bn_variants
    bn_variants.install_custom_gradient_bn(recompute=True)
up = benchmark.time_upstream_step(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "perf", "vat_tf_train_step.meta"), steps=3, warmup=1)
row = benchmark.benchmark_method("vat", "conv_large", "cifar10", 32, 128, steps=3, warmup=1)
print(variant, "upstream", round(up["ms_per_step"]), "vat", round(row["ms_per_step"]),
      "ratio", round(row["ms_per_step"] / up["ms_per_step"], 3), flush=True)
