"""Reproduce the upstream golden values (``../shared/fixtures/upstream/*.npz``).

The checker uses only a fixture's inputs, settings and weights, so it works
on fixtures without expected outputs; when outputs are present it compares
them under the tolerances of the fixtures' README.
"""
from typing import Dict, List

import numpy as np
import tensorflow as tf

from lvat_tf.losses import entropy_from_logits, kl_divergence_with_logits
from lvat_tf.regularizers.power_iteration import xi_resolution_warning
from lvat_tf.regularizers.vat import virtual_adversarial_perturbation
from lvat_tf.upstream import names
from lvat_tf.upstream.checks import Check, per_sample_cosine, relative_error  # noqa: F401
from lvat_tf.generative.vae import VAE
from lvat_tf.regularizers.lvat import lvat_glow_perturbation, lvat_vae_perturbation
from lvat_tf.upstream import train_fixture  # it builds on this module's checks

#: Tolerances (fixtures README): relative error of logits/latents, own loss,
#: loss at the given r; per-sample cosine of the port's own r.
TOL = {"logits": 1e-4, "loss": 1e-3, "loss_at_r_given": 1e-4, "r_cosine": 0.9999}


def detect_kind(files) -> str:
    keys = set(files)
    if any(k.startswith("w/scope_glow/") for k in keys):
        return "lvat_glow"
    if any(k.startswith("w/scope_vae/") for k in keys):
        return "lvat_vae"
    if any(k.startswith("w/CNN/") or k.startswith("w/scope_classifier/") for k in keys):
        return "vat"
    raise ValueError("no upstream weights (w/CNN/..., w/scope_vae/..., w/scope_glow/...) found")


def _scalar(f, key, default=None):
    return f[key].item() if key in f else default


def run_vat_fixture(f, power_iteration: str = "finite_difference") -> Dict[str, np.ndarray]:
    """Computes the port's outputs for a vat_tf fixture (dict of numpy arrays)."""
    weights = names.classifier_weights({k: f[k] for k in f.files}, prefix="w/")
    keep = float(_scalar(f, "keep_prob_hidden", 1.0))
    model = names.conv_large_from_weights(weights, keep_prob_hidden=keep)
    x = tf.constant(f["x"], tf.float32)
    model(x, bn_mode="moving")
    names.load_convnet_weights(model, weights)
    if keep < 1.0:
        raise ValueError("fixture has dropout on (keep_prob_hidden < 1): TF1's dropout stream "
                         "cannot be reproduced; fixtures are made with keep_prob_hidden=1.0")

    def forward(v):
        return model(v, bn_mode="batch")

    logits = forward(x)
    out = {"ul_logit": logits.numpy(), "ul_logit_again": forward(x).numpy(),
           "ul_logit_eval": model(x, bn_mode="moving").numpy(),
           "ent": entropy_from_logits(logits).numpy()}
    r = virtual_adversarial_perturbation(
        forward, x, logits, tf.constant(f["d"], tf.float32), float(f["epsilon"]),
        float(f["xi"]), int(_scalar(f, "num_power_iterations", 1)), power_iteration)
    out["r_vadv"] = r.numpy()
    out["vat_loss"] = kl_divergence_with_logits(logits, forward(x + r)).numpy()
    if "r_given" in f:
        out["loss_at_r_given"] = kl_divergence_with_logits(
            logits, forward(x + tf.constant(f["r_given"], tf.float32))).numpy()
    return out


def compare_vat(f, out) -> List[Check]:
    """Checks against the expected outputs present in the fixture."""
    checks = []
    for key in ("ul_logit", "ul_logit_again", "ul_logit_eval"):
        if key in f:
            checks.append(Check(f"{key} rel. error", relative_error(out[key], f[key]),
                                TOL["logits"], "max"))
    if "ent" in f:
        checks.append(Check("ent rel. error", relative_error(out["ent"], f["ent"]),
                            TOL["logits"], "max"))
    if "r_given" in f and "vat_loss" in f:
        checks.append(Check("loss_at_r_given rel. error",
                            relative_error(out["loss_at_r_given"], f["vat_loss"]),
                            TOL["loss_at_r_given"], "max"))
    # At xi where xi*d vanishes below float32 resolution, upstream's own r and
    # loss are rounding noise (fixtures README): reported, not held.
    noisy = xi_resolution_warning(float(f["xi"]), f["x"].shape[1:],
                                  float(np.max(np.abs(f["x"])))) is not None
    kind = "info" if noisy else None
    if "r_vadv" in f:
        cos = per_sample_cosine(out["r_vadv"], f["r_vadv"])
        checks.append(Check("r_vadv min cosine", float(cos.min()), TOL["r_cosine"],
                            kind or "min"))
        norms = np.linalg.norm(out["r_vadv"].reshape(len(cos), -1), axis=1)
        checks.append(Check("|r| - epsilon (max abs)", float(np.max(np.abs(
            norms - float(f["epsilon"])))), 1e-4 * float(f["epsilon"]), "max"))
    if "vat_loss" in f:
        checks.append(Check("vat_loss rel. error", relative_error(out["vat_loss"], f["vat_loss"]),
                            TOL["loss"], kind or "max"))
    return checks


# ---------------------------------------------------------------------------
# LVAT fixtures
# ---------------------------------------------------------------------------
#: Glow tolerances (fixtures README: 5-bit re-quantisation makes it less stable).
GLOW_TOL = {"loss": 5e-3, "loss_at_r_given": 1e-3, "r_cosine": 0.999, "pixels": 0.01}

#: The graph seeds tried for TF1 dropout masks: TF1's default (87654321, used
#: when only op seeds are set), the harness's --seed=1, and 0 (Glow.py's
#: tf.set_random_seed(0)).
TF1_GRAPH_SEEDS = (None, 1, 0)


def tf1_dropout_masks(shapes, graph_seed, keep_prob=0.5, model_seed=1234):
    """The dropout masks upstream's TF1 graph draws for Conv-Large (first session run).

    TF1 ``cnn.logit`` takes its op seeds from ``numpy.random.RandomState(1234)``:
    nine conv initialisers and two dropouts interleaved, the dropouts being the
    4th and 8th draws. TF's stateful Philox ops are deterministic given (graph
    seed, op seed), so building the same ops in a tf.compat.v1 graph replays
    upstream's masks exactly. Returns masks scaled by 1/keep_prob, one per stage.
    """
    rng = np.random.RandomState(model_seed)
    draws = [rng.randint(123456) for _ in range(8)]
    graph = tf.Graph()
    with graph.as_default():
        if graph_seed is not None:
            tf.compat.v1.random.set_random_seed(graph_seed)
        ops = [tf.nn.dropout(tf.ones(s), rate=1.0 - keep_prob, seed=draws[i])
               for s, i in zip(shapes, (3, 7))]
        with tf.compat.v1.Session(graph=graph) as sess:
            arrays = sess.run(ops)
    return [tf.constant(m) for m in arrays]


def _stage_shapes(model, x_shape):
    b, h, w, _ = x_shape
    shapes = []
    for stage in model.stage_widths:
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((b, h, w, stage[-1]))
    return shapes


def _classifier_with_masks(f, x):
    """(model, clean masks, note): the classifier and the dropout masks that reproduce ul_logit.

    The LVAT fixtures store keep_prob_hidden = 1.0, but their clean logits are
    only reproduced with dropout on (keep 0.5) and TF1's own masks (measured:
    lvat_vae.npz with graph seed 1, lvat_glow.npz with TF1's default seed);
    the checker finds which, and says so.
    """
    weights = names.classifier_weights({k: f[k] for k in f.files}, prefix="w/")
    model = names.conv_large_from_weights(weights, keep_prob_hidden=0.5)
    model(x, bn_mode="moving")
    names.load_convnet_weights(model, weights)
    want = f["ul_logit"] if "ul_logit" in f else None
    plain = model(x, bn_mode="batch")
    if want is None or relative_error(plain, want) <= TOL["logits"]:
        return model, None, "classifier dropout off"
    shapes = _stage_shapes(model, tuple(x.shape))
    for seed in TF1_GRAPH_SEEDS:
        masks = tf1_dropout_masks(shapes, seed)
        if relative_error(model(x, bn_mode="batch", dropout_masks=masks), want) <= TOL["logits"]:
            label = "TF1 default 87654321" if seed is None else str(seed)
            return model, masks, (f"fixture made with dropout ON (keep 0.5) although it stores "
                                  f"keep_prob_hidden={_scalar(f, 'keep_prob_hidden')}; TF1 masks "
                                  f"replayed (graph seed {label})")
    return model, None, "clean logits not reproduced with or without TF1 dropout masks"


def run_lvat_fixture(f, kind: str, power_iteration: str = "finite_difference"):
    """Computes the port's outputs for an lvat_vae / lvat_glow fixture."""

    x = tf.constant(f["x"], tf.float32)
    model, masks, note = _classifier_with_masks(f, x)
    clean = model(x, bn_mode="batch", dropout_masks=masks)
    if kind == "lvat_glow" and masks is not None:
        # Importing Glow.py sets the graph seed to 0 after the clean pass was
        # built: the two perturbed passes share masks drawn under seed 0.
        pert_masks = tf1_dropout_masks(_stage_shapes(model, tuple(x.shape)), 0)
        note += "; perturbed passes: graph seed 0 (Glow.py's tf.set_random_seed(0))"
    else:
        pert_masks = masks

    def forward(v):
        return model(v, bn_mode="batch", dropout_masks=pert_masks)

    eps, xi = float(f["epsilon"]), float(f["xi"])
    iters = int(_scalar(f, "num_power_iterations", 1))
    out = {"ul_logit": clean.numpy(), "note": note}
    if kind == "lvat_vae":
        arrays = {k: f[k] for k in f.files}
        vae = VAE(latent_dim=int(f["d"].shape[-1]), channels=int(x.shape[-1]))
        vae(x)
        names.assign_strict(names.vae_assignments(vae), names.vae_weights(arrays, "w/"), "VAE")
        z, r = lvat_vae_perturbation(forward, vae, x, clean, tf.constant(f["d"]), eps, xi, iters,
                                     power_iteration)
        x_adv = vae.decode(z + r)
        out.update(z_mu=z.numpy(), x_rec=vae.decode(z).numpy(), r_adv=r.numpy(),
                   x_adv=x_adv.numpy(),
                   lvat_loss=kl_divergence_with_logits(clean, forward(x_adv)).numpy())
        if "r_given" in f:
            out["loss_at_r_given"] = kl_divergence_with_logits(
                clean, forward(vae.decode(z + f["r_given"]))).numpy()
        return out
    glow = names.glow_from_weights(names.glow_weights({k: f[k] for k in f.files}, "w/"),
                                   image_shape=tuple(x.shape[1:]))
    u = tf.constant(f["u"])
    y, logdet, z = glow.encode(x, noise=u)
    (_, _), (r_y, r_z) = lvat_glow_perturbation(
        forward, glow, x, clean, [tf.constant(f["d_y"]), tf.constant(f["d_z"])], eps, xi, iters,
        power_iteration, noise=u)
    x_adv = glow.decode(y + r_y, z + r_z)
    out.update(y=y.numpy(), z=z.numpy(), logdet=logdet.numpy(), x_rec=glow.decode(y, z).numpy(),
               r_y=r_y.numpy(), r_z=r_z.numpy(), x_adv=x_adv.numpy(),
               lvat_loss=kl_divergence_with_logits(clean, forward(x_adv)).numpy())
    if "r_y_given" in f:
        out["loss_at_r_given"] = kl_divergence_with_logits(clean, forward(glow.decode(
            y + f["r_y_given"], z + f["r_z_given"]))).numpy()
    return out


def compare_lvat(f, out, kind: str) -> List[Check]:
    """Checks an LVAT fixture's outputs against the port's."""
    glow = kind == "lvat_glow"
    tol = dict(TOL, **GLOW_TOL) if glow else TOL
    checks = [Check("ul_logit rel. error", relative_error(out["ul_logit"], f["ul_logit"]),
                    TOL["logits"], "max")]
    for key in (("y", "z", "logdet") if glow else ("z_mu",)):
        checks.append(Check(f"{key} rel. error", relative_error(out[key], f[key]),
                            TOL["logits"], "max"))
    if glow:
        for key in ("x_rec", "x_adv"):
            frac = float(np.mean(np.abs(out[key] - f[key]) > 0.5 / 255))
            checks.append(Check(f"{key} pixels differing", frac, tol["pixels"], "max"))
    else:
        for key in ("x_rec", "x_adv"):
            checks.append(Check(f"{key} rel. error", relative_error(out[key], f[key]),
                                TOL["logits"], "max"))
    eps = float(f["epsilon"])
    for key in (("r_y", "r_z") if glow else ("r_adv",)):
        cos = per_sample_cosine(out[key], f[key])
        checks.append(Check(f"{key} min cosine", float(cos.min()), tol["r_cosine"], "min"))
        norms = np.linalg.norm(out[key].reshape(len(cos), -1), axis=1)
        checks.append(Check(f"|{key}| - epsilon (max abs)",
                            float(np.max(np.abs(norms - eps))), 1e-4 * eps, "max"))
    checks.append(Check("lvat_loss rel. error", relative_error(out["lvat_loss"], f["lvat_loss"]),
                        tol["loss"], "max"))
    if "loss_at_r_given" in out:
        checks.append(Check("loss_at_r_given rel. error",
                            relative_error(out["loss_at_r_given"], f["lvat_loss"]),
                            tol["loss_at_r_given"], "max"))
    return checks


def check_fixture(path: str, power_iteration: str = "finite_difference"):
    """Runs a fixture: returns (kind, outputs dict, list of Check)."""
    with np.load(path) as f:

        if train_fixture.is_train_fixture(f.files):
            out, checks, note = train_fixture.check_train_fixture(f, power_iteration)
            out["note"] = note
            return "vat_tf_train", out, checks
        kind = detect_kind(f.files)
        if kind == "vat":
            out = run_vat_fixture(f, power_iteration)
            return kind, out, compare_vat(f, out)
        out = run_lvat_fixture(f, kind, power_iteration)
        return kind, out, compare_lvat(f, out, kind)
