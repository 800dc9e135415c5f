"""TF1 variable names (vat_tf ``CNN/...``, LVAT ``scope_classifier/...``) <-> Keras weights."""
import re
from typing import Dict, Mapping

import numpy as np

from lvat_tf.models.classifiers import ConvNet

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
