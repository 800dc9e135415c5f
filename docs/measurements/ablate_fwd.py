"""Which non-conv op makes the bfloat16 Conv-Large forward slow? (issue 15) Ablation timing.

A fifth argument ``jvp`` (session 20) times TensorFlow's forward-mode J d instead of the
forward + input gradient: ``python docs/measurements/ablate_fwd.py 128 3 full float32 jvp``."""
import os, statistics, sys, time
import numpy as np, tensorflow as tf, keras
from lvat_tf.config import make_config
from lvat_tf.models import registry as model_registry, layers as L, classifiers as C
from lvat_tf.precision import dtype_policy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bn_variants  # noqa: E402

B, REPS = int(sys.argv[1]), int(sys.argv[2])
variant = sys.argv[3]
policy = sys.argv[4]
if "nobn" in variant:
    L.UpstreamBatchNorm.call = lambda self, x, mode="moving": x
if "foldbn" in variant:
    bn_variants.install_folded_bn()
if "cgbn" in variant:
    bn_variants.install_custom_gradient_bn(recompute=False)
if "nolrelu" in variant:
    tf.nn.leaky_relu = lambda h, alpha=0.2: h
if "nodrop" in variant:
    C.stateless_dropout = lambda h, k, s: h
if "nopool" in variant:
    tf.nn.max_pool2d = lambda h, k, s, padding: h[:, ::2, ::2, :]
cfg = make_config(dataset="cifar10", model="conv_large", method="vat")
x = tf.constant(np.random.RandomState(0).uniform(-.5, .5, (B, 32, 32, 3)), tf.float32)
seed = tf.constant([0, 1], tf.int64)
with dtype_policy(policy):
    keras.utils.set_random_seed(0)
    clf = model_registry.build_from_config(cfg, 10)
    clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    f = tf.function(lambda: clf(x, bn_mode="batch", dropout_seed=seed), autograph=False)
    def vjp():
        with tf.GradientTape() as t:
            t.watch(x); l = clf(x, bn_mode="batch", dropout_seed=seed)
        return t.gradient(l, x, output_gradients=tf.ones_like(l))
    def jvp():
        d = tf.constant(np.random.RandomState(1).normal(size=x.shape), tf.float32)
        with tf.autodiff.ForwardAccumulator(x, d) as acc:
            l = clf(x, bn_mode="batch", dropout_seed=seed)
        return acc.jvp(l)
    second = sys.argv[5] if len(sys.argv) > 5 else "vjp"
    g = tf.function(jvp if second == "jvp" else vjp, autograph=False)
    out = []
    for fn in (f, g):
        fn().numpy()
        ts = []
        for _ in range(REPS):
            t = time.perf_counter(); fn().numpy(); ts.append(time.perf_counter() - t)
        out.append(round(1000 * statistics.median(ts)))
print(f"{policy:15s} {variant:30s} fwd {out[0]:6d} ms  "
      f"{'jvp' if second == 'jvp' else 'fwd+vjp'} {out[1]:6d} ms", flush=True)
