"""Conv-Large's forward pass against TensorFlow's forward-mode J d, with ops removed
(session 20, issue 15): `full`, `nobn`, `nopool`, `nolrelu`, `nodrop` and combinations.
Usage: python docs/measurements/ablate_jvp.py 128 3 full float32"""
import os, statistics, sys, time
import numpy as np, tensorflow as tf, keras
from lvat_tf.config import make_config
from lvat_tf.models import registry as model_registry, layers as L, classifiers as C
from lvat_tf.precision import dtype_policy
B, REPS, variant, policy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if "nobn" in variant:
    L.UpstreamBatchNorm.call = lambda self, x, mode="moving": x
if "nolrelu" in variant:
    tf.nn.leaky_relu = lambda h, alpha=0.2: h
if "nodrop" in variant:
    C.stateless_dropout = lambda h, k, s: h
if "nopool" in variant:
    tf.nn.max_pool2d = lambda h, k, s, padding: h[:, ::2, ::2, :]
cfg = make_config(dataset="cifar10", model="conv_large", method="vat")
x = tf.constant(np.random.RandomState(0).uniform(-.5, .5, (B, 32, 32, 3)), tf.float32)
d = tf.constant(np.random.RandomState(1).normal(size=(B, 32, 32, 3)), tf.float32)
seed = tf.constant([0, 1], tf.int64)
with dtype_policy(policy):
    keras.utils.set_random_seed(0)
    clf = model_registry.build_from_config(cfg, 10)
    clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    f = tf.function(lambda: clf(x, bn_mode="batch", dropout_seed=seed), autograph=False)
    def jvp():
        with tf.autodiff.ForwardAccumulator(x, d) as acc:
            l = clf(x, bn_mode="batch", dropout_seed=seed)
        return acc.jvp(l)
    g = tf.function(jvp, autograph=False)
    out = []
    for fn in (f, g):
        fn().numpy()
        ts = []
        for _ in range(REPS):
            t = time.perf_counter(); fn().numpy(); ts.append(time.perf_counter() - t)
        out.append(round(1000 * statistics.median(ts)))
print(f"{policy:15s} {variant:24s} fwd {out[0]:6d} ms  jvp {out[1]:6d} ms  ratio {out[1]/out[0]:.2f}", flush=True)
