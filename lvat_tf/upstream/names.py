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
    pairs = convnet_assignments(model)
    expected = {n for n, _ in pairs}
    missing = sorted(expected - set(weights))
    unknown = sorted(set(weights) - expected)
    if missing or unknown:
        raise UpstreamWeightsError(f"classifier weights do not match Conv-Large: missing "
                                   f"{missing[:5]}, unknown {unknown[:5]}")
    for name, var in pairs:
        val = weights[name]
        if tuple(val.shape) != tuple(var.shape):
            raise UpstreamWeightsError(f"{name}: shape {tuple(val.shape)} does not fit "
                                       f"{tuple(var.shape)}")
        var.assign(val.astype(np.float32))
