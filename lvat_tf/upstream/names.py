"""TF1 variable names (vat_tf ``CNN/...``, LVAT ``scope_classifier/...``) <-> Keras weights."""
import re
from typing import Dict, Mapping

import numpy as np

from lvat_tf.models.classifiers import ConvNet
from lvat_tf.generative.glow import Glow

CLASSIFIER_SCOPES = ("CNN", "scope_classifier")
_BN_SUFFIX = {"mean": "moving_mean", "var": "moving_variance", "gamma": "gamma", "beta": "beta"}


class UpstreamWeightsError(ValueError):
    """Missing, unknown or mis-shaped upstream variables (one-line message)."""


def classifier_weights(arrays: Mapping[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
    """The classifier variables of a name->array mapping, keyed without scope.

    Accepts keys like ``[prefix]CNN/c1_W`` or ``[prefix]scope_classifier/b1_mean``.
    """
    out = {}
    for key, val in arrays.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        for scope in CLASSIFIER_SCOPES:
            if name.startswith(scope + "/"):
                out[name[len(scope) + 1:]] = np.asarray(val)
    return out


def conv_large_from_weights(weights: Mapping[str, np.ndarray], keep_prob_hidden=0.5,
                            lrelu_a=0.1, bn_decay=0.99) -> ConvNet:
    """Builds a ConvNet whose layout matches upstream weights (widths from the shapes).

    vat_tf's Conv-Large has nine convs: c1..c6 in two SAME stages of three,
    c7 3x3 VALID, c8 and c9 1x1; ``bfc_*`` present means --top_bn.
    """
    convs = sorted((int(m.group(1)) for m in (re.fullmatch(r"c(\d+)_W", k) for k in weights)
                    if m), key=int)
    if convs != list(range(1, 10)):
        raise UpstreamWeightsError(f"expected conv kernels c1_W..c9_W, found "
                                   f"{['c%d_W' % i for i in convs]}")
    widths = [int(weights[f"c{i}_W"].shape[-1]) for i in range(1, 10)]
    model = ConvNet((tuple(widths[0:3]), tuple(widths[3:6])), tuple(widths[6:9]),
                    num_classes=int(weights["fc_W"].shape[-1]),
                    keep_prob_hidden=keep_prob_hidden, lrelu_a=lrelu_a,
                    top_bn="bfc_gamma" in weights, bn_decay=bn_decay, name="conv_large")
    return model


def convnet_assignments(model: ConvNet):
    """Pairs (upstream name, Keras variable) for every variable of a ConvNet."""
    pairs = []
    for i, (conv, bn) in enumerate(zip(model.convs, model.bns), start=1):
        pairs.append((f"c{i}_W", conv.kernel))
        for up, attr in _BN_SUFFIX.items():
            pairs.append((f"b{i}_{up}", getattr(bn, attr)))
    pairs += [("fc_W", model.fc.kernel), ("fc_b", model.fc.bias)]
    if model.top_bn is not None:
        pairs += [(f"bfc_{up}", getattr(model.top_bn, attr)) for up, attr in _BN_SUFFIX.items()]
    return pairs


def load_convnet_weights(model: ConvNet, weights: Mapping[str, np.ndarray]) -> None:
    """Assigns upstream-named arrays to a built ConvNet; strict both ways."""
    assign_strict(convnet_assignments(model), weights, "classifier")


# ---------------------------------------------------------------------------
# LVAT VAE (scope_vae)
# ---------------------------------------------------------------------------
_KERAS_BN = {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
             "moving_variance": "moving_variance"}


def vae_weights(arrays: Mapping[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
    """The ``scope_vae/...`` variables of a mapping, keyed without the scope."""
    head = prefix + "scope_vae/"
    return {k[len(head):]: np.asarray(v) for k, v in arrays.items() if k.startswith(head)}


def vae_assignments(vae):
    """(upstream name, Keras variable) pairs of the LVAT VAE."""
    pairs = []
    for i, (conv, bn) in enumerate(zip(vae.e_convs, vae.e_bns), start=1):
        pairs += [(f"e_{i}_1/W", conv.kernel), (f"e_{i}_1/b", conv.bias)]
        pairs += [(f"e_{i}/{up}", getattr(bn, attr)) for up, attr in _KERAS_BN.items()]
    for dense in (vae.top_of_encoder, vae.top_of_decoder):
        pairs += [(f"{dense.name}/weights", dense.kernel), (f"{dense.name}/biases", dense.bias)]
    for i, (conv, bn) in enumerate(zip(vae.d_convs, vae.d_bns), start=1):
        pairs += [(f"d_{i}_{i}/W", conv.kernel), (f"d_{i}_{i}/b", conv.bias)]
        pairs += [(f"d_{i}/{up}", getattr(bn, attr)) for up, attr in _KERAS_BN.items()]
    n = len(vae.d_convs) + 1
    pairs += [(f"d_{n}_{n}/W", vae.d_out.kernel), (f"d_{n}_{n}/b", vae.d_out.bias)]
    return pairs


def assign_strict(pairs, weights: Mapping[str, np.ndarray], what: str) -> None:
    """Assigns name->array to (name, variable) pairs; missing/unknown/mis-shaped is an error."""
    expected = {n for n, _ in pairs}
    missing = sorted(expected - set(weights))
    unknown = sorted(set(weights) - expected)
    if missing or unknown:
        raise UpstreamWeightsError(f"{what} weights do not match: missing {missing[:5]}, "
                                   f"unknown {unknown[:5]}")
    for name, var in pairs:
        val = weights[name]
        if tuple(val.shape) != tuple(var.shape):
            raise UpstreamWeightsError(f"{what} {name}: shape {tuple(val.shape)} does not fit "
                                       f"{tuple(var.shape)}")
        var.assign(np.asarray(val, np.float32))


# ---------------------------------------------------------------------------
# LVAT Glow (scope_glow)
# ---------------------------------------------------------------------------
def glow_weights(arrays: Mapping[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
    """The ``scope_glow/...`` variables of a mapping, keyed without the scope."""
    head = prefix + "scope_glow/"
    return {k[len(head):]: np.asarray(v) for k, v in arrays.items() if k.startswith(head)}


def glow_layout(weights: Mapping[str, np.ndarray]) -> dict:
    """(num_levels, num_steps, width) read from upstream Glow variable names and shapes."""
    found = [re.search(r"/Scale(\d+)/ChainLayer/Step(\d+)/", k) for k in weights]
    found = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    if not found:
        raise UpstreamWeightsError("no Glow steps (.../Scale<l>/ChainLayer/Step<k>/...) found")
    levels = max(s for s, _ in found)
    steps = max(k for _, k in found)
    l1 = [v for k, v in weights.items() if k.endswith("/BlockNN/l_1/W")]
    return {"num_levels": levels, "num_steps": steps, "width": int(l1[0].shape[-1])}


def glow_assignments(glow):
    """(upstream name, Keras variable) pairs of the LVAT Glow (names under ``scope_glow/``)."""
    pairs = []
    for lvl, level in enumerate(glow.levels, start=1):
        for k, step in enumerate(level, start=1):
            base = f"encoder//ChainLayer/Scale{lvl}/ChainLayer/Step{k}/ChainLayer/"
            act = base + "/ActnormLayer//ChainLayer/"
            pairs += [(act + "/ActnormBiasLayer/bias", step.actnorm.bias),
                      (act + "/ActnormScaleLayer/log_scale", step.actnorm.log_scale)]
            inv = base + "/InvertibleConv1x1Layer/"
            conv = step.invconv
            pairs += [(inv + "P_mat", conv.p_mat), (inv + "L_mat", conv.l_mat),
                      (inv + "U_mat", conv.u_mat), (inv + "sign_S", conv.sign_s),
                      (inv + "log_S", conv.log_s)]
            nn = step.coupling_nn
            blk = base + f"/AffineCouplingLayer/Step{k}/BlockNN/"
            pairs += [(blk + "l_1/W", nn.l1_w), (blk + "l_1/actnorm_center/b", nn.l1_b),
                      (blk + "l_1/actnorm_scale/logs", nn.l1_logs),
                      (blk + "l_2/W", nn.l2_w), (blk + "l_2/actnorm_center/b", nn.l2_b),
                      (blk + "l_2/actnorm_scale/logs", nn.l2_logs),
                      (blk + "l_last/W", nn.last_w), (blk + "l_last/b", nn.last_b),
                      (blk + "l_last/logs", nn.last_logs)]
    return pairs


def glow_from_weights(weights: Mapping[str, np.ndarray], image_shape=(32, 32, 3)):
    """A Glow of the upstream layout found in ``weights``, with those weights assigned."""
    glow = Glow(image_shape=image_shape, num_bits=5, **glow_layout(weights))
    glow.build()
    assign_strict(glow_assignments(glow), weights, "Glow")
    return glow
