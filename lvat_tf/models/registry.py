"""The model registry: ``--model`` name -> builder.

A builder takes keyword arguments (num_classes, keep_prob_hidden, lrelu_a,
top_bn, bn_decay, kernel_init) and returns an unbuilt classifier. Tiny variants used by the
tests live beside the real ones.
"""
from typing import Callable, Dict

from lvat_tf.models.classifiers import MLP, ConvNet, LeNetPP

_BUILDERS: Dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


def names():
    return sorted(_BUILDERS)


def build(name: str, *, num_classes=10, keep_prob_hidden=0.5, lrelu_a=0.1, top_bn=False,
          bn_decay=0.99, kernel_init="upstream"):
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; expected one of {'|'.join(names())}")
    return _BUILDERS[name](num_classes=num_classes, keep_prob_hidden=keep_prob_hidden,
                           lrelu_a=lrelu_a, top_bn=top_bn, bn_decay=bn_decay,
                           kernel_init=kernel_init)


def build_from_config(cfg, num_classes):
    return build(cfg.model, num_classes=num_classes, keep_prob_hidden=cfg.keep_prob_hidden,
                 lrelu_a=cfg.lrelu_a, top_bn=cfg.top_bn, bn_decay=cfg.bn_stats_decay_factor,
                 kernel_init=cfg.kernel_init)


#: Models whose kernels follow ``--kernel_init``; Lenet++ keeps Keras' defaults.
KERNEL_INIT_MODELS = set()


def _conv(stages, top, name):
    KERNEL_INIT_MODELS.add(name)

    def builder(num_classes, keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init):
        return ConvNet(stages, top, num_classes=num_classes, keep_prob_hidden=keep_prob_hidden,
                       lrelu_a=lrelu_a, top_bn=top_bn, bn_decay=bn_decay,
                       kernel_init=kernel_init, name=name)
    return builder


def _mlp(hidden, name):
    KERNEL_INIT_MODELS.add(name)

    def builder(num_classes, keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init):
        del keep_prob_hidden, lrelu_a  # the VAT MLP has no dropout and uses ReLU
        return MLP(hidden, num_classes=num_classes, top_bn=top_bn, bn_decay=bn_decay,
                   kernel_init=kernel_init, name=name)
    return builder


# vat_tf cnn.py, LVAT Table 1.
register("conv_large")(_conv(((128,) * 3, (256,) * 3), (512, 256, 128), "conv_large"))
# Conv-Large's layer structure (LVAT Table 1: 3x3 / 3x3 / 3x3, pool, dropout,
# 3x3 x3, pool, dropout, 3x3 valid, 1x1, 1x1, GAP; BN and lrelu 0.1 everywhere)
# at a half and a quarter of its widths: the CPU-scale CIFAR-10 recipe
# (recipes.py cifar10_4k; a quarter costs about 1/16 of Conv-Large's FLOPs).
register("conv_large_half")(_conv(((64,) * 3, (128,) * 3), (256, 128, 64), "conv_large_half"))
register("conv_large_quarter")(_conv(((32,) * 3, (64,) * 3), (128, 64, 32),
                                     "conv_large_quarter"))
# VAT paper (Miyato et al., TPAMI 2018), Table 6, CIFAR-10 variant: 96x3 / 192x3 /
# 192 valid / 192 1x1 / 192 1x1, GAP, dense 192->10. Our reading, see docs/models.md.
register("conv_small")(_conv(((96,) * 3, (192,) * 3), (192, 192, 192), "conv_small"))
# The same paper's SVHN variant: 64x3 / 128x3 / 128 valid / 128 / 128, dense 128->10.
register("conv_small_svhn")(_conv(((64,) * 3, (128,) * 3), (128, 128, 128), "conv_small_svhn"))
# VAT paper's MNIST MLP 784-1200-600-300-150-10 with BN.
register("mlp")(_mlp((1200, 600, 300, 150), "mlp"))
# Lenet++ (center-loss paper; MAT paper's MNIST model), 2-d embedding.
@register("lenet_pp")
def _lenet_pp(num_classes, keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init):
    # no dropout, PReLU, no BN; Keras' default initializers (config.validate refuses
    # another --kernel_init for it)
    del keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init
    return LeNetPP(num_classes=num_classes, name="lenet_pp")


# Test-only tiny variants: same code paths, a few thousand parameters.
register("tiny_cnn")(_conv(((8,), (16,)), (16, 16, 8), "tiny_cnn"))
register("tiny_mlp")(_mlp((32, 16), "tiny_mlp"))


@register("tiny_lenet_pp")
def _tiny_lenet_pp(num_classes, keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init):
    del keep_prob_hidden, lrelu_a, top_bn, bn_decay, kernel_init
    return LeNetPP(widths=(4, 8), num_classes=num_classes, name="tiny_lenet_pp")
