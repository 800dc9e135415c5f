"""Reproduce the upstream golden values (``../shared/fixtures/upstream/*.npz``).

The checker uses only a fixture's inputs, settings and weights, so it works
on fixtures without expected outputs; when outputs are present it compares
them under the tolerances of the fixtures' README.
"""
import dataclasses
from typing import Dict, List

import numpy as np
import tensorflow as tf

from lvat_tf.losses import entropy_from_logits, kl_divergence_with_logits
from lvat_tf.regularizers.power_iteration import xi_resolution_warning
from lvat_tf.regularizers.vat import virtual_adversarial_perturbation
from lvat_tf.upstream import names

#: Tolerances (fixtures README): relative error of logits/latents, own loss,
#: loss at the given r; per-sample cosine of the port's own r.
TOL = {"logits": 1e-4, "loss": 1e-3, "loss_at_r_given": 1e-4, "r_cosine": 0.9999}


@dataclasses.dataclass
class Check:
    name: str
    value: float
    limit: float
    kind: str  # "max" (value <= limit) or "min" (value >= limit) or "info"

    @property
    def ok(self) -> bool:
        if self.kind == "info":
            return True
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def __str__(self):
        rel = {"max": "<=", "min": ">=", "info": "(reported, not held:"}[self.kind]
        tail = ")" if self.kind == "info" else ""
        status = "ok" if self.ok else "FAIL"
        return f"{self.name:28s} {self.value:.7g}  {rel} {self.limit:.5g}{tail}  {status}"


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def per_sample_cosine(a, b) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


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


def check_fixture(path: str, power_iteration: str = "finite_difference"):
    """Runs a fixture: returns (kind, outputs dict, list of Check)."""
    with np.load(path) as f:
        kind = detect_kind(f.files)
        if kind != "vat":
            # The VAE parts of lvat_vae.npz reproduce (tests/test_vae.py) but its
            # classifier pass does not (README, "Measured results"); Glow is not
            # ported yet. Refuse rather than print a misleading comparison.
            raise ValueError(f"{kind} fixtures are not checked by this version (see README, "
                             "'Measured results')")
        out = run_vat_fixture(f, power_iteration)
        return kind, out, compare_vat(f, out)
