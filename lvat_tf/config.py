"""The one validated, frozen configuration of a run.

Flags (``flags/``) are turned into a :class:`Config` exactly once by
:func:`make_config`. Defaults that upstream made depend on the dataset or the
method (``epsilon``, ``num_labeled_examples``, ``data_dir``,
``eval_batch_size``, and our new ``model``) are given as ``None`` and resolved
here from the tables below; every resolved default is logged. Nothing in the
library reads absl flags.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from absl import logging


from lvat_tf import files
from lvat_tf.data import registry as data_registry
from lvat_tf.data.ssl import LABEL_SCHEMES
from lvat_tf.distribute import STRATEGIES
from lvat_tf.errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)
from lvat_tf.generative.model_dir import BFLOAT16_DECODERS
from lvat_tf.models import registry as model_registry
from lvat_tf.models.layers import KERNEL_INITS
from lvat_tf.regularizers import methods
from lvat_tf.regularizers.base import PERTURBED_BN_MODES
from lvat_tf.regularizers.lvat import REFERENCES as LVAT_REFERENCES
from lvat_tf.regularizers.mat import COVARIANCES, SMOOTHNESS


# ----------------------------------------------------------------------------
# Defaults that depend on the dataset live on its DatasetSpec
# (lvat_tf.data.registry.DatasetDefaults), those that depend on the method on
# its MethodSpec (lvat_tf.regularizers.methods); make_config applies them.
# ----------------------------------------------------------------------------

#: The budget flags a dataset may set its own defaults for.
BUDGET_FIELDS = ("num_epochs", "epoch_decay_start", "num_iter_per_epoch")

#: eval_batch_size: vat_tf train_semisup.py 100, vat_tf test.py 500.
EVAL_BATCH_SIZE_DEFAULTS = {"train": 100, "test": 500}

POWER_ITERATION_MODES = ("finite_difference", "exact")

#: --generative_dtype: the dtype LVAT's decodes compute in (the encoder stays float32).
GENERATIVE_DTYPES = ("float32", "bfloat16")


def glow_defaults(dataset: str) -> dict:
    """Glow layout and training steps train.py uses for a dataset (its DatasetDefaults)."""
    return data_registry.get_spec(dataset).defaults.glow_layout()


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs. Field names follow vat_tf's flags.

    Attributes are documented in ``flags/definitions.py`` (one help string per
    flag); the ones without an upstream flag are marked there as ours.
    """

    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    dataset_seed: int = 1
    # ours: how the labeled subset is drawn (None = the dataset's own scheme,
    # resolved by make_config; lvat_tf/data/ssl.py).
    label_scheme: str | None = None
    num_labeled_examples: int | None = None
    num_valid_examples: int = 1000
    validation: bool = False
    aug_trans: bool = False
    aug_flip: bool = False
    # ours: the input transform (methods.INPUT_TRANSFORMS); "method" = each method's own.
    input_transform: str = "method"
    # vat_tf whitens CIFAR-10 (ZCA) for its VAT runs; the LVAT paper ran its VAT
    # rows without it (Table 3, "no ZCA"): --nozca gives that, for any method.
    zca: bool = True
    tfds_download: bool = True
    # speed and scale
    jit_compile: bool = False
    mixed_precision: bool = False
    distribution_strategy: str = "default"
    num_cpu_devices: int = 1
    # model
    model: str | None = None
    keep_prob_hidden: float = 0.5
    lrelu_a: float = 0.1
    top_bn: bool = False
    bn_stats_decay_factor: float = 0.99
    # ours: the kernels' initializer (models.layers.KERNEL_INITS); vat_tf's conv init by
    # default, also for the MLP, which vat_tf lacks (measured against Keras' Glorot
    # uniform on MNIST-100, no better: docs/results.md#basin-settings).
    kernel_init: str = "upstream"
    # method
    method: str = "vat"
    epsilon: float | None = None
    xi: float = 1e-6
    num_power_iterations: int = 1
    power_iteration: str = "finite_difference"
    # LVAT: the frozen generative model (trained first into LOG_DIR/generative
    # when not given) and the scaled VAE training budget for that case.
    generative_model_dir: str | None = None
    vae_num_epochs: int | None = None
    glow_train_steps: int | None = None
    lvat_reference: str = "input"
    lvat_bn: str = "batch"
    # ours: the dtype of LVAT's decodes (GENERATIVE_DTYPES). float32 by default, also
    # under mixed_precision: a bfloat16 VAE decoder keeps the direction but did not
    # make the step faster where measured (docs/results.md 'LVAT's decoder in bfloat16').
    generative_dtype: str = "float32"
    # ours: the same for VAT's passes (batch = upstream; PERTURBED_BN_MODES).
    vat_bn: str = "batch"
    # ours: entropy minimisation added to any method with an unlabeled term
    # (vat_tf's vatent is vat + this).
    entmin: bool = False
    # MAT / center loss (MAT paper; docs/methods.md "MAT" for the choices)
    mat_lambda1: float | None = None
    mat_lambda2: float = 0.1
    mat_covariance: str = "full"
    # Defaults: the only MAT setting measured to train here (docs/methods.md "MAT");
    # the paper's form is mat_smoothness="log", mat_min_variance=0.
    mat_smoothness: str = "plain"
    mat_alpha: float = 0.99
    mat_beta: float = 0.9
    mat_min_variance: float = 1.0
    # optimisation (vat_tf train_semisup.py)
    batch_size: int = 32
    ul_batch_size: int = 128
    eval_batch_size: int | None = None
    eval_freq: int = 5
    num_epochs: int = 120
    epoch_decay_start: int = 80
    num_iter_per_epoch: int = 400
    learning_rate: float = 0.001
    mom1: float = 0.9
    mom2: float = 0.5
    # ours: lr multiplied by this once per epoch on top of vat_tf's schedule (the VAT
    # authors' Theano scripts, takerum/vat train_mnist_semisup.py --learning_rate_decay,
    # 0.9 there); 1.0 = off, vat_tf's schedule unchanged.
    learning_rate_decay: float = 1.0
    # ours: the unlabeled (consistency) terms' weight rises over this many updates
    # (0 = full weight from the first update, as upstream).
    consistency_rampup: int = 0
    # ours: a warm start, the classifier's weights (not the optimizer's state) from
    # another run's latest checkpoint when this run has none of its own.
    init_from: str | None = None
    # run
    log_dir: str = ""
    seed: int = 1
    # ours: the classifier's initial weights from this seed instead of `seed`
    # (batches, dropout and directions keep following `seed`): separates what
    # the initialisation decides from what the trajectory does.
    init_seed: int | None = None
    num_eval_examples: int = 5000
    # test.py
    finetune_batch_size: int = 100
    finetune_iter: int = 100

    # ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(unknown[0], "unknown configuration key")
        return cls(**dict(d))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @property
    def num_iterations(self) -> int:
        return self.num_epochs * self.num_iter_per_epoch


def default_epsilon(method: str, dataset: str, augmented: bool) -> float:
    """The per-method, per-dataset epsilon upstream/papers use.

    A method with its own epsilon table (LVAT, MAT) answers first; otherwise
    the dataset's input-space value (DatasetDefaults.vat_epsilon).
    """
    spec = methods.get_method(method)
    if spec.epsilon_defaults is not None:
        eps = spec.epsilon_defaults(dataset, augmented)
        if eps is not None:
            return eps
    return data_registry.get_spec(dataset).defaults.vat_epsilon[int(bool(augmented))]


def make_config(script: str = "train", **values) -> Config:
    """Builds, resolves and validates a :class:`Config`.

    Args:
      script: ``"train"`` or ``"test"``; selects the eval_batch_size default
        (vat_tf's train_semisup.py 100, test.py 500).
      **values: field values; ``None`` means "not given".

    Returns:
      A frozen, validated Config with every dataset/method default resolved.

    Raises:
      ConfigError: naming the offending flag.
    """
    known = {f.name for f in dataclasses.fields(Config)}
    for k in values:
        if k not in known:
            raise ConfigError(k, "unknown configuration key")
    given = {k: v for k, v in values.items() if v is not None}
    cfg = Config(**given)

    if cfg.dataset not in data_registry.names():
        raise ConfigError("dataset", f"unknown dataset {cfg.dataset!r}; expected one of "
                          + "|".join(data_registry.names()))
    if cfg.method not in methods.names():
        raise ConfigError("method", f"unknown method {cfg.method!r}; expected one of "
                          + "|".join(methods.names()))
    resolved = {}
    augmented = cfg.aug_trans or cfg.aug_flip
    ds = data_registry.get_spec(cfg.dataset).defaults
    if cfg.num_labeled_examples is None:
        resolved["num_labeled_examples"] = ds.num_labeled
    if cfg.data_dir is None and ds.data_dir:
        resolved["data_dir"] = ds.data_dir
    if cfg.model is None:
        resolved["model"] = ds.model
    if cfg.label_scheme is None:
        resolved["label_scheme"] = data_registry.get_spec(cfg.dataset).label_scheme
    if cfg.epsilon is None:
        resolved["epsilon"] = default_epsilon(cfg.method, cfg.dataset, augmented)
    if cfg.vae_num_epochs is None:
        resolved["vae_num_epochs"] = ds.vae_epochs
    if cfg.mat_lambda1 is None:
        resolved["mat_lambda1"] = methods.get_method(cfg.method).lambda1_defaults(cfg.dataset)
    if cfg.glow_train_steps is None:
        resolved["glow_train_steps"] = ds.glow_layout()["train_steps"]
    if cfg.eval_batch_size is None:
        resolved["eval_batch_size"] = EVAL_BATCH_SIZE_DEFAULTS.get(script, 100)
    budget = ds.budget_fields()
    for k in BUDGET_FIELDS:
        if values.get(k) is None and k in budget:
            resolved[k] = budget[k]
    forced = {}
    if cfg.mixed_precision and cfg.power_iteration == "finite_difference":
        if methods.get_method(cfg.method).first_order_direction(cfg):
            # The direction is the KL's gradient at r = 0 (+ xi * H d, far smaller), which
            # bfloat16 keeps: the exact mode's forward-over-reverse product would cost
            # 1.8x (VAE) to 3.9x (Glow) the VAT step for the same direction (measured,
            # docs/results.md 'bfloat16 where it pays').
            logging.info("--mixed_precision: --power_iteration=finite_difference kept for "
                         "--method=%s (its direction is the gradient at r = 0, which "
                         "bfloat16 keeps)", cfg.method)
        else:
            # xi * d (xi = 1e-6) vanishes in bfloat16: the direction would be noise.
            forced["power_iteration"] = "exact"
            logging.info("--mixed_precision: --power_iteration=exact (finite differences "
                         "vanish in bfloat16)")
    for k, v in resolved.items():
        logging.info("Default for --%s (dataset=%s, method=%s): %s", k, cfg.dataset,
                     cfg.method, v)
    cfg = cfg.replace(**resolved, **forced)
    validate(cfg)
    return cfg


def _positive(cfg, name, allow_zero=False):
    v = getattr(cfg, name)
    if (v < 0) or (v == 0 and not allow_zero):
        raise ConfigError(name, f"expected a {'non-negative' if allow_zero else 'positive'}"
                          f" value, got {v}")


def validate(cfg: Config) -> None:
    """Checks every field; raises ConfigError naming the first bad flag."""
    if cfg.model not in model_registry.names():
        raise ConfigError("model", f"unknown model {cfg.model!r}; expected one of "
                          + "|".join(model_registry.names()))
    for name in ("batch_size", "ul_batch_size", "eval_batch_size", "eval_freq", "num_epochs",
                 "num_iter_per_epoch", "learning_rate", "num_labeled_examples",
                 "finetune_batch_size", "num_eval_examples"):
        _positive(cfg, name)
    for name in ("epsilon", "num_valid_examples", "finetune_iter", "epoch_decay_start"):
        _positive(cfg, name, allow_zero=True)
    if cfg.distribution_strategy not in STRATEGIES:
        raise ConfigError("distribution_strategy", f"expected one of {'|'.join(STRATEGIES)}, "
                          f"got {cfg.distribution_strategy!r}")
    if cfg.num_cpu_devices < 1:
        raise ConfigError("num_cpu_devices", f"expected >= 1, got {cfg.num_cpu_devices}")
    if cfg.num_power_iterations < 1:
        raise ConfigError("num_power_iterations", f"expected >= 1, got {cfg.num_power_iterations}")
    if not cfg.xi > 0:
        raise ConfigError("xi", f"expected a positive finite-difference scale, got {cfg.xi}")
    if cfg.power_iteration not in POWER_ITERATION_MODES:
        raise ConfigError("power_iteration", f"expected one of {'|'.join(POWER_ITERATION_MODES)},"
                          f" got {cfg.power_iteration!r}")
    if not 0.0 < cfg.keep_prob_hidden <= 1.0:
        raise ConfigError("keep_prob_hidden", f"expected a keep probability in (0, 1], got "
                          f"{cfg.keep_prob_hidden}")
    if cfg.kernel_init not in KERNEL_INITS:
        raise ConfigError("kernel_init", f"expected one of {'|'.join(KERNEL_INITS)}, got "
                          f"{cfg.kernel_init!r}")
    if cfg.kernel_init != "upstream" and cfg.model not in model_registry.KERNEL_INIT_MODELS:
        raise ConfigError("kernel_init", f"--model={cfg.model} keeps its own (Keras default) "
                          "initializers; --kernel_init applies to "
                          + "|".join(sorted(model_registry.KERNEL_INIT_MODELS)))
    if not 0.0 <= cfg.bn_stats_decay_factor < 1.0:
        raise ConfigError("bn_stats_decay_factor", f"expected a value in [0, 1), got "
                          f"{cfg.bn_stats_decay_factor}")
    for name in ("mom1", "mom2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(name, f"expected an Adam beta1 in [0, 1), got {getattr(cfg, name)}")
    if cfg.lrelu_a < 0:
        raise ConfigError("lrelu_a", f"expected a non-negative slope, got {cfg.lrelu_a}")
    if cfg.epoch_decay_start > cfg.num_epochs:
        raise ConfigError("epoch_decay_start", f"expected <= --num_epochs ({cfg.num_epochs}), "
                          f"got {cfg.epoch_decay_start}")
    spec = data_registry.get_spec(cfg.dataset)
    if cfg.num_labeled_examples > spec.num_train:
        raise ConfigError("num_labeled_examples", f"{cfg.num_labeled_examples} labeled examples "
                          f"requested but {cfg.dataset} has {spec.num_train} training examples")
    scheme = cfg.label_scheme or spec.label_scheme
    if scheme not in LABEL_SCHEMES:
        raise ConfigError("label_scheme", f"expected one of {'|'.join(LABEL_SCHEMES)}, got "
                          f"{scheme!r}")
    if scheme in ("balanced", "per_class") and cfg.num_labeled_examples % spec.num_classes:
        raise ConfigError("num_labeled_examples", f"{cfg.dataset} draws a class-balanced labeled "
                          f"set (--label_scheme={scheme}): expected a multiple of "
                          f"{spec.num_classes}, got {cfg.num_labeled_examples}")
    if cfg.validation:
        if spec.validation_scheme == "from_labeled" and \
                cfg.num_valid_examples >= cfg.num_labeled_examples:
            raise ConfigError("num_valid_examples", f"{cfg.dataset} takes the validation set "
                              f"from the labeled set (as vat_tf): expected fewer than "
                              f"--num_labeled_examples={cfg.num_labeled_examples}, got "
                              f"{cfg.num_valid_examples}")
        if cfg.num_labeled_examples + cfg.num_valid_examples > spec.num_train:
            raise ConfigError("num_valid_examples", "labeled + validation examples exceed the "
                              "training set")
    if cfg.mat_covariance not in COVARIANCES:
        raise ConfigError("mat_covariance", f"expected one of {'|'.join(COVARIANCES)}, got "
                          f"{cfg.mat_covariance!r}")
    if cfg.mat_smoothness not in SMOOTHNESS:
        raise ConfigError("mat_smoothness", f"expected one of {'|'.join(SMOOTHNESS)}, got "
                          f"{cfg.mat_smoothness!r}")
    for name in ("mat_lambda1", "mat_lambda2"):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, f"expected >= 0, got {getattr(cfg, name)}")
    if cfg.mat_min_variance < 0:
        raise ConfigError("mat_min_variance", f"expected >= 0, got {cfg.mat_min_variance}")
    for name in ("mat_alpha", "mat_beta"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(name, f"expected a moving-average decay in [0, 1), got "
                              f"{getattr(cfg, name)}")
    for name in ("lvat_bn", "vat_bn"):
        if getattr(cfg, name) not in PERTURBED_BN_MODES:
            raise ConfigError(name, f"expected {'|'.join(PERTURBED_BN_MODES)}, got "
                              f"{getattr(cfg, name)!r}")
    if cfg.generative_dtype not in GENERATIVE_DTYPES:
        raise ConfigError("generative_dtype", f"expected {'|'.join(GENERATIVE_DTYPES)}, got "
                          f"{cfg.generative_dtype!r}")
    if cfg.generative_dtype == "bfloat16":
        kind = methods.get_method(cfg.method).generative
        if kind not in BFLOAT16_DECODERS:
            raise ConfigError("generative_dtype", f"bfloat16 decodes are for "
                              f"{'|'.join(BFLOAT16_DECODERS)} models; --method={cfg.method} "
                              + ("decodes with a Glow, whose inverse in bfloat16 changes "
                                 "LVAT's direction (docs/results.md)" if kind else
                                 "has no generative model") + ": expected float32")
        if not cfg.mixed_precision:
            raise ConfigError("generative_dtype", "bfloat16 decodes feed a bfloat16 "
                              "classifier: expected float32 without --mixed_precision")
    if cfg.lvat_reference not in LVAT_REFERENCES:
        raise ConfigError("lvat_reference", f"expected {'|'.join(LVAT_REFERENCES)}, got "
                          f"{cfg.lvat_reference!r}")
    if cfg.input_transform not in methods.INPUT_TRANSFORMS:
        raise ConfigError("input_transform", f"expected {'|'.join(methods.INPUT_TRANSFORMS)}, "
                          f"got {cfg.input_transform!r}")
    if cfg.input_transform == "vat" and methods.get_method(cfg.method).generative:
        raise ConfigError("input_transform", f"--method={cfg.method} perturbs through a "
                          f"generative model trained on x / 255: expected method or lvat")
    if cfg.entmin and cfg.method == "vatent":
        raise ConfigError("entmin", "--method=vatent already minimises the entropy")
    if cfg.entmin and not methods.get_method(cfg.method).uses_unlabeled:
        raise ConfigError("entmin", f"--method={cfg.method} trains on no unlabeled batch to "
                          f"minimise the entropy of")
    if not 0.0 < cfg.learning_rate_decay <= 1.0:
        raise ConfigError("learning_rate_decay", f"expected a factor in (0, 1] (1 = off), got "
                          f"{cfg.learning_rate_decay}")
    if cfg.init_seed is not None and not 0 <= cfg.init_seed < 2 ** 32:
        raise ConfigError("init_seed", f"expected a seed in [0, 2^32) or none (= --seed), got "
                          f"{cfg.init_seed}")
    if cfg.consistency_rampup < 0:
        raise ConfigError("consistency_rampup", f"expected 0 (off) or a number of updates, got "
                          f"{cfg.consistency_rampup}")
    if cfg.init_from is not None and not str(cfg.init_from).strip():
        raise ConfigError("init_from", "expected a run directory or checkpoint path, got ''")
    if cfg.glow_train_steps < 0:
        raise ConfigError("glow_train_steps", f"expected 0 (upstream schedule) or >= 1, got "
                          f"{cfg.glow_train_steps}")
    if cfg.vae_num_epochs < 1:
        raise ConfigError("vae_num_epochs", f"expected >= 1, got {cfg.vae_num_epochs}")
    # No file-system checks here (validation is pure): --data_dir is checked where
    # the data is opened (data/registry.py), --generative_model_dir where the
    # model is loaded (generative/model_dir.py), --init_from where the run starts
    # (training/run.py).


def save_config(cfg: Config, log_dir: str) -> str:
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, "config.json")
    files.write_text_atomic(path, cfg.to_json())
    return path


def load_config(log_dir: str) -> Config:
    path = os.path.join(log_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError("log_dir", f"{log_dir} holds no config.json (not a run directory)")
    with open(path) as f:
        return Config.from_dict(json.load(f))
