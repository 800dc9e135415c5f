"""LVAT-VAE latent direction under bfloat16: exact (forward-over-reverse) vs finite difference,
against float32 exact (issue 15). Trained CIFAR-10 VAE of the cifar10_4k recipe, Conv-Large at
random init (same weights in float32 and bfloat16), 32 test images."""
import sys, numpy as np, tensorflow as tf, keras
from lvat_tf.config import make_config
from lvat_tf.models import registry as R
from lvat_tf.precision import dtype_policy
from lvat_tf.generative.model_dir import load
from lvat_tf.generative.train_vae import training_images
from lvat_tf.regularizers.power_iteration import power_iteration

vae, _ = load(sys.argv[1])
_, x_test, _ = training_images("cifar10", sys.argv[2])
x = tf.constant(x_test[:32], tf.float32)
model = sys.argv[3] if len(sys.argv) > 3 else "conv_large"
cfg = make_config(dataset="cifar10", model=model, method="lvat_vae")
def build(policy):
    with dtype_policy(policy):
        keras.utils.set_random_seed(0)
        clf = R.build_from_config(cfg, 10)
        clf(tf.zeros((2, 32, 32, 3)), bn_mode="moving")
    return clf
f32, bf = build("float32"), build("mixed_bfloat16")
for a, b in zip(bf.variables, f32.variables):
    a.assign(b)
seed = tf.constant([0, 1], tf.int64)
z = vae.encode(x, training=False)[0]
d0 = tf.random.stateless_normal(z.shape, seed=[0, 2])
out = {}
for name, clf in (("float32", f32), ("bfloat16", bf)):
    fwd = lambda d, clf=clf: clf(vae.decode(z + d, training=False), bn_mode="batch", dropout_seed=seed)
    clean = clf(x, bn_mode="batch", dropout_seed=seed)
    for mode in ("exact", "finite_difference"):
        g = power_iteration(fwd, clean, d0, xi=1e-6, mode=mode, first_order=True)
        out[f"{name}_{mode}"] = g.numpy()
    # the first-order term alone: the KL's gradient at r = 0
    with tf.GradientTape() as t:
        r0 = tf.zeros_like(z); t.watch(r0)
        from lvat_tf.losses import kl_divergence_with_logits
        kl = kl_divergence_with_logits(tf.stop_gradient(clean), fwd(r0))
    out[f"{name}_grad_at_0"] = t.gradient(kl, r0).numpy()
ref = out["float32_exact"]
def cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
for k, v in out.items():
    c = cos(v, ref)
    print(f"{k:28s} cosine to float32 exact: mean {c.mean():.4f} min {c.min():.4f}")
