"""The method registry: ``--method`` -> a list of regularisers.

Methods compose regularisers rather than copying code: ``vatent`` is
``[VAT, Entropy]``. Later methods (LVAT, MAT) register here the same way.
"""
import dataclasses
from typing import Callable, Dict, List, Optional

from lvat_tf.data import pipeline
from lvat_tf.regularizers.base import BuildContext
from lvat_tf.regularizers.latent_mat import LatentMAT
from lvat_tf.regularizers.lvat import LVATVAE, LVATGlow
from lvat_tf.regularizers.mat import MAT, GaussianMixture
from lvat_tf.regularizers.vat import VAT, Entropy


def _mat_lambda1(dataset: str) -> float:
    """MAT's lambda1 for ``dataset``: MAT_LAMBDA1 (the MAT paper's values, below), 0.1 elsewhere."""
    return MAT_LAMBDA1.get(dataset, 0.1)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A training method.

    Attributes:
      name: the ``--method`` value.
      build: ``build(config, ctx) -> list of regularisers`` (ctx: a
        :class:`~lvat_tf.regularizers.base.BuildContext`).
      description: one line for ``--helpfull`` and the README.
      epsilon_defaults: ``(dataset, augmented) -> epsilon`` when the method
        has its own table (LVAT); None to use the input-space VAT table.
      uses_unlabeled: False for the supervised baseline (no unlabeled stream).
      input_scaling: ``vat`` ((x - 127.5) / 255, vat_tf) or ``unit`` (x / 255,
        LVAT, whose generative models need [0, 1]).
      generative: the generative model kind the method perturbs ("vae", "glow"), or None.
      needs_features: the method models the classifier's last hidden layer (MAT).
      lambda1_defaults: ``dataset -> lambda1`` for the MAT weight ``mat_lambda1``
        when the flag is not given. Every method resolves it (settings.json records it
        for every run, as it always has); only the MAT family reads it.
      first_order_direction: ``config -> bool``: the KL the direction search
        differentiates has a non-zero gradient at r = 0 (LVAT against p(y|x): the
        reconstruction gap), so upstream's finite difference at xi = 1e-6 returns that
        gradient (+ xi * H d) and stays well defined in bfloat16; False where the
        gradient at r = 0 vanishes and the direction is the H d a finite difference
        loses in bfloat16 (VAT, MAT, LVAT against the reconstruction).
    """

    name: str
    build: Callable
    description: str
    epsilon_defaults: Optional[Callable] = None
    uses_unlabeled: bool = True
    input_scaling: str = "vat"
    generative: Optional[str] = None
    needs_features: bool = False
    lambda1_defaults: Callable = _mat_lambda1
    first_order_direction: Callable = lambda cfg: False

    def input_needs(self, zca: bool = True) -> pipeline.InputNeeds:
        """The input transform this method needs (scaling, LVAT's padding), for the data layer."""
        return pipeline.InputNeeds(scaling=self.input_scaling,
                                   generative=bool(self.generative), zca=zca)


_METHODS: Dict[str, MethodSpec] = {}


#: --input_transform: the method's own (vat_tf's for VAT, LVAT's for LVAT), or
#: either one for any method: e.g. VAT on LVAT's inputs, to compare the two
#: regularisers on identical inputs or to warm-start LVAT from a VAT solution.
INPUT_TRANSFORMS = ("method", "vat", "lvat")


def input_needs(method: str, zca: bool = True, transform: str = "method"
                ) -> pipeline.InputNeeds:
    """The input transform of a run: ``get_method(method).input_needs(zca)``, or the one
    ``transform`` names (vat: (x - 127.5) / 255; lvat: x / 255, small images zero-padded
    to 32x32 as the generative models need)."""
    if transform == "vat":
        return pipeline.InputNeeds(scaling="vat", generative=False, zca=zca)
    if transform == "lvat":
        return pipeline.InputNeeds(scaling="unit", generative=True, zca=zca)
    return get_method(method).input_needs(zca)


def register(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


def names() -> List[str]:
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of {'|'.join(names())}")
    return _METHODS[name]


def build_regularizers(cfg, generative_model=None, feature_dim=None, num_classes=None,
                       generative_decoder=None) -> list:
    """The method's regularisers.

    Args:
      cfg: the run config.
      generative_model: the loaded (frozen) VAE / Glow for LVAT methods.
      generative_decoder: its copy for the decodes under ``--generative_dtype=bfloat16``
        (``generative.model_dir.compute_copy``); None: the model decodes.
      feature_dim, num_classes: the classifier's feature size and classes
        (methods with ``needs_features``: MAT, center loss).

    Raises:
      ValueError: the method needs a part of the context that is missing.
    """
    spec = get_method(cfg.method)
    if spec.generative and generative_model is None:
        raise ValueError(f"method {cfg.method} needs a generative model")
    if spec.needs_features and (feature_dim is None or num_classes is None):
        raise ValueError(f"method {cfg.method} needs the classifier's feature size")
    regs = list(spec.build(cfg, BuildContext(generative_model, feature_dim, num_classes,
                                             generative_decoder)))
    if cfg.entmin:  # composes with any method's unlabeled terms (vatent = vat + this)
        regs.append(Entropy())
    return regs


def _search(cfg) -> dict:
    """The adversarial-direction settings every VAT-family regulariser takes."""
    return dict(epsilon=cfg.epsilon, xi=cfg.xi, num_power_iterations=cfg.num_power_iterations,
                power_iteration=cfg.power_iteration)


def _vat(cfg):
    return VAT(bn=cfg.vat_bn, **_search(cfg))


register(MethodSpec("baseline", lambda cfg, ctx: [], "cross-entropy on the labeled batch only",
                    uses_unlabeled=False))
register(MethodSpec("vat", lambda cfg, ctx: [_vat(cfg)], "CE + input-space VAT (vat_tf)"))
register(MethodSpec("vatent", lambda cfg, ctx: [_vat(cfg), Entropy()],
                    "CE + VAT + entropy minimisation (vat_tf vatent)"))


#: LVAT paper section 6.2: epsilon_lvat VAE 1.5 (SVHN), 1.0 (CIFAR-10); LVAT's
#: flag default 1.0 elsewhere (no published MNIST value).
LVAT_VAE_EPSILON = {"svhn": 1.5, "cifar10": 1.0}


def _lvat_first_order(cfg) -> bool:
    """LVAT's reference p(y|x) is not the output at r = 0 (p(y|Dec(Enc(x))))."""
    return cfg.lvat_reference == "input"


def _lvat_vae(cfg, ctx):
    return [LVATVAE(ctx.generative_model, reference=cfg.lvat_reference, bn=cfg.lvat_bn,
                    decoder=ctx.generative_decoder, **_search(cfg))]


register(MethodSpec("lvat_vae", _lvat_vae, "CE + VAT in the latent space of a frozen VAE "
                    "(LVAT-VAE)", epsilon_defaults=lambda ds, aug: LVAT_VAE_EPSILON.get(ds, 1.0),
                    input_scaling="unit", generative="vae",
                    first_order_direction=_lvat_first_order))


#: LVAT paper section 6.2.2: epsilon_lvat for Glow 1.0 on SVHN and CIFAR-10
#: (upstream's README command uses 1.5 for SVHN; pass --epsilon=1.5 for it).
LVAT_GLOW_EPSILON = {"svhn": 1.0, "cifar10": 1.0}


def _lvat_glow(cfg, ctx):
    return [LVATGlow(ctx.generative_model, reference=cfg.lvat_reference, bn=cfg.lvat_bn,
                     decoder=ctx.generative_decoder, **_search(cfg))]


register(MethodSpec("lvat_glow", _lvat_glow, "CE + VAT in the latent space (y, z) of a frozen "
                    "Glow (LVAT-Glow)",
                    epsilon_defaults=lambda ds, aug: LVAT_GLOW_EPSILON.get(ds, 1.0),
                    input_scaling="unit", generative="glow",
                    first_order_direction=_lvat_first_order))


#: MAT paper: sigma = 2 (MNIST), 20 (CIFAR-10); lambda1 = 0.1 (MNIST), 0.01
#: (CIFAR-10); lambda2 = 0.1. Elsewhere sigma falls back to the VAT table.
MAT_EPSILON = {"mnist": 2.0, "cifar10": 20.0}
MAT_LAMBDA1 = {"cifar10": 0.01}


def _mixture(cfg, ctx, center_only=False):
    """MAT's Gaussian mixture over the classifier's features (identity covariance: center loss)."""
    return GaussianMixture(ctx.num_classes, ctx.feature_dim,
                          covariance="identity" if center_only else cfg.mat_covariance,
                          alpha=cfg.mat_alpha, beta=cfg.mat_beta,
                          min_variance=cfg.mat_min_variance, name="gmm")


def _mat(cfg, ctx, center_only=False):
    return [MAT(_mixture(cfg, ctx, center_only), lambda1=0.0 if center_only else cfg.mat_lambda1,
                lambda2=cfg.mat_lambda2, smoothness=cfg.mat_smoothness,
                name="center_loss" if center_only else "mat_loss", **_search(cfg))]


register(MethodSpec("mat", _mat, "CE + MAT: output + Gaussian-mixture manifold smoothness "
                    "under the adversarial r, + the information regulariser",
                    epsilon_defaults=lambda ds, aug: MAT_EPSILON.get(ds), needs_features=True))
register(MethodSpec("center_loss", lambda cfg, ctx: _mat(cfg, ctx, center_only=True),
                    "CE + center loss (MAT's information term with identity covariance)",
                    uses_unlabeled=False, needs_features=True))


def _latent_mat(cfg, ctx, searcher):
    return [LatentMAT(_mixture(cfg, ctx), lambda1=cfg.mat_lambda1, lambda2=cfg.mat_lambda2,
                      smoothness=cfg.mat_smoothness,
                      latent=searcher(ctx.generative_model, decoder=ctx.generative_decoder,
                                      **_search(cfg)),
                      **_search(cfg))]


# LVAT x MAT, one per generative model (the searcher finds r in its latent space).
for _kind, _shown, _searcher, _eps in (("vae", "VAE", LVATVAE, LVAT_VAE_EPSILON),
                                       ("glow", "Glow", LVATGlow, LVAT_GLOW_EPSILON)):
    register(MethodSpec(
        f"lvat_{_kind}_mat", lambda cfg, ctx, searcher=_searcher: _latent_mat(cfg, ctx, searcher),
        f"CE + MAT's smoothness with x_adv from a frozen {_shown}'s latent space + MAT's "
        "information term (ours)",
        epsilon_defaults=lambda ds, aug, table=_eps: table.get(ds, 1.0),
        input_scaling="unit", generative=_kind, needs_features=True,
        first_order_direction=lambda cfg: True))
del _kind, _shown, _searcher, _eps
