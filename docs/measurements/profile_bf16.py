"""Component times of the VAT step on Conv-Large, float32 vs mixed_bfloat16 (issue 15).

The session-8 "old kernel" figures are this script at commit 613de17 (before the fused
bfloat16 batch norm); POLICIES=float32 or POLICIES=mixed_bfloat16 runs one policy."""
import statistics, sys, time, json
import numpy as np, tensorflow as tf, keras
from lvat_tf.config import make_config
from lvat_tf.models import registry as model_registry
from lvat_tf.precision import dtype_policy
from lvat_tf.regularizers.power_iteration import power_iteration, _gauss_newton_hvp
from lvat_tf.losses import kl_divergence_with_logits

B = int(sys.argv[1]) if len(sys.argv) > 1 else 128
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["fwd", "vjp", "jvp", "lin", "gn",
                                                           "fd", "train"]
cfg = make_config(dataset="cifar10", model="conv_large", method="vat")
x = tf.constant(np.random.RandomState(0).uniform(-.5, .5, (B, 32, 32, 3)), tf.float32)
seed = tf.constant([0, 1], tf.int64)

def timeit(fn):
    fn().numpy() if not isinstance(fn(), (list, tuple)) else None
    ts = []
    for _ in range(REPS):
        t = time.perf_counter(); out = fn(); tf.nest.map_structure(lambda t: t.numpy(), out)
        ts.append(time.perf_counter() - t)
    return round(1000 * statistics.median(ts), 1)

import os
res = {}
for policy in os.environ.get("POLICIES", "float32,mixed_bfloat16").split(","):
    with dtype_policy(policy):
        keras.utils.set_random_seed(0)
        clf = model_registry.build_from_config(cfg, 10)
        clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
        fwd = lambda r: clf(x + r, bn_mode="batch", dropout_seed=seed)
        zeros = tf.zeros_like(x)
        d = tf.random.normal(x.shape)
        fns = {}
        fns["fwd"] = tf.function(lambda: fwd(zeros), autograph=False)
        def vjp():
            with tf.GradientTape() as t:
                t.watch(zeros); l = fwd(zeros)
            return t.gradient(l, zeros, output_gradients=tf.ones_like(l))
        fns["vjp"] = tf.function(vjp, autograph=False)
        def jvp():
            with tf.autodiff.ForwardAccumulator(zeros, d) as acc:
                l = fwd(zeros)
            return acc.jvp(l)
        fns["jvp"] = tf.function(jvp, autograph=False)
        # The classifier's own tangent pass (session 20), which the training step's
        # Gauss-Newton product uses instead of TensorFlow's forward mode ("jvp").
        fns["lin"] = tf.function(lambda: clf.linearize(zeros + x, d, bn_mode="batch",
                                                       dropout_seed=seed)[1], autograph=False)
        lin = lambda r, t: clf.linearize(x + r, t, bn_mode="batch", dropout_seed=seed)  # noqa
        fns["gn"] = tf.function(lambda: _gauss_newton_hvp(fwd, [zeros], [d], False, lin)[0],
                                autograph=False)
        def fd():
            clean = fwd(zeros)
            return power_iteration(fwd, clean, d, mode="finite_difference", xi=1e-6)
        fns["fd"] = tf.function(fd, autograph=False)
        def train():  # clean fwd + adversarial fwd/bwd wrt weights
            with tf.GradientTape() as t:
                l = kl_divergence_with_logits(tf.stop_gradient(fwd(zeros)), fwd(d * 0.01))
            return t.gradient(l, clf.trainable_variables)[0]
        fns["train"] = tf.function(train, autograph=False)
        res[policy] = {k: timeit(fns[k]) for k in which}
        print(policy, res[policy], flush=True)
if len(res) == 2: print(json.dumps({k: round(res["mixed_bfloat16"][k] / res["float32"][k], 2) for k in which}))
