"""Flag definitions: vat_tf names and defaults, LVAT spellings as aliases.

Defined inside functions (Model Garden style), so importing defines nothing.
Flags whose upstream default depends on the dataset or the method
(``epsilon``, ``num_labeled_examples``, ``data_dir``, ``eval_batch_size``,
and our ``model``) default to None here and are resolved, and logged, by
``lvat_tf.config.make_config``.
"""
import dataclasses

from absl import flags

from lvat_tf.data.ssl import LABEL_SCHEMES  # light: numpy only

#: vat_tf flag -> default, for flags with a fixed default (tests assert these).
UPSTREAM_DEFAULTS = {
    # train_semisup.py
    "device": "/gpu:0", "dataset": "cifar10", "log_dir": "", "seed": 1, "validation": False,
    "batch_size": 32, "ul_batch_size": 128, "eval_freq": 5, "num_epochs": 120,
    "epoch_decay_start": 80, "num_iter_per_epoch": 400, "learning_rate": 0.001, "mom1": 0.9,
    "mom2": 0.5, "method": "vat",
    # vat.py
    "xi": 1e-6, "num_power_iterations": 1,
    # cnn.py / layers.py
    "keep_prob_hidden": 0.5, "lrelu_a": 0.1, "top_bn": False, "bn_stats_decay_factor": 0.99,
    # dataset_utils.py
    "aug_trans": False, "aug_flip": False,
    # cifar10.py / svhn.py
    "num_valid_examples": 1000, "dataset_seed": 1,
    # test.py
    "finetune_batch_size": 100, "finetune_iter": 100,
}

#: Flags whose default depends on the dataset/method (None = resolve later).
DATASET_DEPENDENT = ("epsilon", "num_labeled_examples", "data_dir", "eval_batch_size", "model")

#: LVAT's spellings -> ours (absl aliases: same value object).
ALIASES = {"data__dir": "data_dir", "log__dir": "log_dir", "is_aug_trans": "aug_trans",
           "is_aug_flip": "aug_flip"}

_DEFINED = set()


def define_flags(script: str = "train") -> None:
    """Defines every flag once (idempotent).

    Args:
      script: ``train`` or ``test``; only changes help texts.
    """
    if "dataset" in _DEFINED:
        return
    U = UPSTREAM_DEFAULTS
    d = flags
    # --- data (vat_tf cifar10.py / svhn.py / dataset_utils.py) ---
    d.DEFINE_string("dataset", U["dataset"], "cifar10 | svhn | mnist | fashion_mnist | digits "
                    "(digits = scikit-learn's embedded 8x8 digits, no download). [vat_tf]")
    d.DEFINE_string("data_dir", None, "Directory with the canonical raw files (MNIST IDX gz, "
                    "SVHN train/test_32x32.mat, CIFAR-10 cifar-10-batches-py/), else a tfds "
                    "data dir. Default depends on the dataset: /tmp/cifar10, /tmp/svhn, "
                    "/tmp/mnist, /tmp/fashion_mnist (vat_tf pattern). [vat_tf]")
    d.DEFINE_integer("dataset_seed", U["dataset_seed"], "Seed of the labeled-subset draw. [vat_tf]")
    d.DEFINE_enum("label_scheme", None, list(LABEL_SCHEMES), "How the labeled "
                  "subset is drawn: balanced = n/K per class in the order of one permutation of "
                  "the training set (vat_tf cifar10.py), random = the first n of it (vat_tf "
                  "svhn.py), per_class = each class permuted in turn, first n/K (the draw of "
                  "../shared/tools/minimal_vat_mlp.py). Default depends on the dataset: svhn "
                  "random, the others balanced. [ours]")
    d.DEFINE_integer("num_labeled_examples", None, "Labeled examples. Default depends on the "
                     "dataset: cifar10 4000, svhn 1000 (vat_tf); mnist, fashion_mnist, digits "
                     "100. [vat_tf]")
    d.DEFINE_integer("num_valid_examples", U["num_valid_examples"], "Validation examples. "
                     "[vat_tf]")
    d.DEFINE_bool("validation", U["validation"], "Hold out a validation set and evaluate on it. "
                  "[vat_tf]")
    d.DEFINE_bool("aug_trans", U["aug_trans"], "Random 2-px translation (zero pad + crop) of "
                  "labeled and unlabeled batches. [vat_tf]")
    d.DEFINE_bool("aug_flip", U["aug_flip"], "Random horizontal flip. [vat_tf]")
    d.DEFINE_enum("input_transform", "method", ["method", "vat", "lvat"], "Input transform: "
                  "method = the method's own (vat_tf's (x - 127.5) / 255, or LVAT's x / 255 with "
                  "images under 32x32 zero-padded to 32x32); vat or lvat = that one for any "
                  "method (e.g. VAT on LVAT's inputs). [ours]")
    d.DEFINE_bool("zca", True, "ZCA-whiten the inputs where vat_tf does (CIFAR-10 with VAT-type "
                  "methods); --nozca as the LVAT paper's VAT rows (Table 3). [ours]")
    d.DEFINE_bool("tfds_download", True, "Allow tensorflow-datasets to download when no raw "
                  "files are found (off: fail at once when offline). [ours]")
    # --- model (vat_tf cnn.py / layers.py) ---
    d.DEFINE_string("model", None, "conv_large | conv_small | conv_small_svhn | mlp | tiny_cnn | "
                    "tiny_mlp. Default depends on the dataset: conv_large for cifar10/svhn, mlp "
                    "for mnist/fashion_mnist/digits. [ours; upstream has Conv-Large only]")
    d.DEFINE_float("keep_prob_hidden", U["keep_prob_hidden"], "Dropout keep probability. [vat_tf]")
    d.DEFINE_float("lrelu_a", U["lrelu_a"], "Leaky-ReLU slope. [vat_tf]")
    d.DEFINE_bool("top_bn", U["top_bn"], "Batch norm on the logits. [vat_tf]")
    d.DEFINE_float("bn_stats_decay_factor", U["bn_stats_decay_factor"], "Decay of the BN moving "
                   "averages. [vat_tf]")
    d.DEFINE_enum("kernel_init", "upstream", ["upstream", "glorot"], "Kernel initializer of the "
                  "conv nets and the MLP: upstream = vat_tf's truncated normal, stddev "
                  "sqrt(2.6 / fan_in); glorot = Keras' Glorot uniform (Lenet++ keeps Keras' "
                  "defaults). [ours]")
    # --- method (vat_tf vat.py) ---
    d.DEFINE_string("method", U["method"], "baseline | vat | vatent | lvat_vae | lvat_glow | mat | center_loss | "
                    "lvat_vae_mat | lvat_glow_mat (LVAT's --method=lvat --ae_type=VAE|Glow maps "
                    "to lvat_vae | lvat_glow). [vat_tf]")
    d.DEFINE_float("epsilon", None, "L2 norm of the perturbation. Default depends on method and "
                   "dataset: VAT cifar10 10.0 (8.0 with aug), svhn 2.5 (3.5 with aug), mnist and "
                   "fashion_mnist 5.0, digits 1.5; otherwise vat_tf's 8.0. LVAT-VAE (LVAT paper): svhn 1.5, "
                   "cifar10 1.0, otherwise LVAT's 1.0. LVAT-Glow (paper): 1.0 (upstream's README "
                   "command: 1.5 on SVHN). [vat_tf]")
    d.DEFINE_float("xi", U["xi"], "Finite-difference scale of the power iteration. [vat_tf]")
    d.DEFINE_integer("num_power_iterations", U["num_power_iterations"], "Power iterations. "
                     "[vat_tf]")
    d.DEFINE_enum("power_iteration", "finite_difference", ["finite_difference", "exact"],
                  "finite_difference: upstream's gradient at xi*d; exact: Hessian-vector product "
                  "by forward-over-reverse autodiff (no xi). [ours]")
    d.DEFINE_string("generative_model_dir", None, "LVAT: directory of a trained generative "
                    "model (run_scripts/train_vae.py or train_glow.py); when not given, train.py trains one into "
                    "LOG_DIR/generative first. [ours; LVAT hard-codes out_VAE_<DS>]")
    d.DEFINE_integer("vae_num_epochs", None, "LVAT: epochs of that VAE when train.py trains it. "
                     "Default depends on the dataset: svhn/cifar10 300 (paper), mnist/"
                     "fashion_mnist 10, digits 30. [ours]")
    d.DEFINE_integer("glow_train_steps", None, "LVAT-Glow: training steps of the Glow when "
                     "train.py trains it (0 = upstream's schedule). Default depends on the "
                     "dataset: svhn/cifar10 0, mnist/fashion_mnist 1500, digits 300; the flow "
                     "layout follows DatasetDefaults.glow in lvat_tf/data/registry.py. [ours]")
    d.DEFINE_enum("lvat_reference", "input", ["input", "reconstruction"], "LVAT: the clean "
                  "target of the KL. input = p(y|x) as upstream (the term is then non-zero at "
                  "r = 0: KL(p(y|x) || p(y|Dec(Enc(x)))), the reconstruction gap); "
                  "reconstruction = p(y|Dec(Enc(x))), zero at r = 0. [ours]")
    d.DEFINE_enum("lvat_bn", "batch", ["batch", "joint", "moving"], "LVAT: batch-norm "
                  "statistics of the term's classifier passes. batch = as upstream (the "
                  "perturbed pass normalised with the decoded batch's own statistics); joint = "
                  "reference and perturbed inputs normalised together as one batch [x; x_adv]; "
                  "moving = the BN moving averages (measured to collapse; kept to reproduce "
                  "that). [ours]")
    d.DEFINE_enum("generative_dtype", "float32", ["float32", "bfloat16"], "LVAT: the dtype "
                  "of the generative model's decodes (the direction search, x_adv; the encoder "
                  "stays float32). bfloat16 needs --mixed_precision and a VAE: measured to keep "
                  "the direction and the term, not faster on a CPU without AMX; refused for "
                  "Glow, whose inverse in bfloat16 changes the direction. [ours]")
    d.DEFINE_enum("vat_bn", "batch", ["batch", "joint", "moving"], "VAT / vatent: batch-norm "
                  "statistics of the term's classifier passes. batch = as upstream (x + r "
                  "normalised with the perturbed batch's own statistics); joint = x and x + r "
                  "normalised together as one batch; moving = the BN moving averages. [ours]")
    d.DEFINE_bool("entmin", False, "Add entropy minimisation on the clean unlabeled pass to the "
                  "method's terms (any method with an unlabeled batch; vat_tf's vatent is "
                  "--method=vat --entmin). [ours]")
    d.DEFINE_bool("jit_compile", False, "Compile the whole train step with XLA (measured slower "
                  "for Conv-Large on a 2-core CPU; try it on GPUs). [ours]")
    d.DEFINE_bool("mixed_precision", False, "bfloat16 compute with float32 variables; losses, "
                  "softmax and BN statistics in float32; implies --power_iteration=exact. [ours]")
    d.DEFINE_enum("distribution_strategy", "default", ["default", "mirrored",
                                                       "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy: mirrored = all local GPUs (else --num_cpu_devices "
                  "logical CPUs); multi_worker_mirrored reads TF_CONFIG. Same numbers on any "
                  "number of replicas (synchronised BN, global-batch random draws). [ours]")
    d.DEFINE_integer("num_cpu_devices", 1, "Logical CPU devices to split the host CPU into "
                     "(replicas of --distribution_strategy=mirrored without GPUs). [ours]")
    # --- MAT / center loss (MAT paper; no public code) ---
    d.DEFINE_float("mat_lambda1", None, "MAT: weight of the smoothness term. Default: 0.1, "
                   "cifar10 0.01 (MAT paper). [ours]")
    d.DEFINE_float("mat_lambda2", 0.1, "MAT / center loss: weight of the information term "
                   "(MAT paper 0.1). [ours]")
    d.DEFINE_float("mat_min_variance", 1.0, "MAT: absolute floor added to the mixture's "
                   "variances; bounds the information term, which otherwise grows without "
                   "limit as features shrink. Default 1.0: the only MAT setting measured to "
                   "train (docs/results.md 'MAT'); 0 = the paper's form. [ours]")
    d.DEFINE_enum("mat_covariance", "full", ["full", "diagonal", "identity"], "MAT: covariance "
                  "of the per-class Gaussians (identity = center loss). [ours]")
    d.DEFINE_enum("mat_smoothness", "plain", ["log", "plain"], "MAT: the plain mean S "
                  "(default: measured to train) or the paper's mean log S (Eq. 13; collapsed "
                  "Lenet++ within 400 updates here, docs/results.md 'MAT'). [ours]")
    d.DEFINE_float("mat_alpha", 0.99, "MAT: moving-average decay of the covariances "
                   "(Algorithm 1's alpha; not given in the paper). [ours]")
    d.DEFINE_float("mat_beta", 0.9, "MAT / center loss: moving-average decay of the means "
                   "(Algorithm 1's beta; not given in the paper). [ours]")
    # --- optimisation (vat_tf train_semisup.py) ---
    d.DEFINE_integer("batch_size", U["batch_size"], "Labeled batch. [vat_tf]")
    d.DEFINE_integer("ul_batch_size", U["ul_batch_size"], "Unlabeled batch. [vat_tf]")
    d.DEFINE_integer("eval_batch_size", None, "Evaluation batch. Default depends on the "
                     "script: 100 in train.py "
                     "(vat_tf train_semisup.py), 500 in test.py (vat_tf test.py). [vat_tf]")
    d.DEFINE_integer("eval_freq", U["eval_freq"], "Evaluate every this many epochs. [vat_tf]")
    d.DEFINE_integer("num_epochs", U["num_epochs"], "Epochs (digits, when not given: 5). "
                     "[vat_tf]")
    d.DEFINE_integer("epoch_decay_start", U["epoch_decay_start"], "First epoch of linear lr "
                     "decay (and of beta1 = mom2) (digits, when not given: 5, no decay). "
                     "[vat_tf]")
    d.DEFINE_integer("num_iter_per_epoch", U["num_iter_per_epoch"], "Updates per epoch "
                     "(digits, when not given: 300). [vat_tf]")
    d.DEFINE_float("learning_rate", U["learning_rate"], "Adam's initial learning rate. [vat_tf]")
    d.DEFINE_float("mom1", U["mom1"], "Adam beta1 before the decay. [vat_tf]")
    d.DEFINE_float("mom2", U["mom2"], "Adam beta1 from epoch_decay_start on. [vat_tf]")
    d.DEFINE_float("learning_rate_decay", 1.0, "Multiply the lr by this once per epoch, on "
                   "top of the linear decay (the VAT authors' Theano MNIST scripts: 0.9 per "
                   "epoch); 1 = off, vat_tf's schedule. [ours]")
    d.DEFINE_integer("consistency_rampup", 0, "Updates over which the weight of the "
                     "regularisers' unlabeled terms rises as exp(-5 (1 - t/T)^2) to 1 (Laine & "
                     "Aila's ramp-up); 0 = full weight from the first update, as upstream. [ours]")
    # --- run ---
    if "log_dir" in flags.FLAGS:
        # absl.logging already defines --log_dir (default "", as vat_tf's); we
        # share that flag: absl writes log files there only when asked to.
        flags.FLAGS["log_dir"].help = ("Run directory: config, checkpoints, TensorBoard, "
                                       "results.json. [vat_tf]")
    else:
        d.DEFINE_string("log_dir", U["log_dir"], "Run directory: config, checkpoints, "
                        "TensorBoard, results.json. [vat_tf]")
    d.DEFINE_integer("seed", U["seed"], "Seed of initialisation, batches, dropout and VAT "
                     "directions (upstream's had no effect on TF ops). [vat_tf]")
    d.DEFINE_integer("init_seed", None, "Seed of the classifier's initial weights only "
                     "(default: --seed); batches, dropout and directions follow --seed. [ours]")
    d.DEFINE_string("device", U["device"], "Accepted for command-line compatibility; placement "
                    "is automatic. [vat_tf]")
    d.DEFINE_string("init_from", None, "Warm start: a run directory (its latest checkpoint) or a "
                    "checkpoint prefix whose classifier weights and BN statistics this run starts "
                    "from (same model and inputs; the optimizer starts fresh). Used only when "
                    "--log_dir has no checkpoint yet. [ours]")
    d.DEFINE_integer("num_eval_examples", 5000, "Examples in each periodic evaluation (vat_tf "
                     "NUM_EVAL_EXAMPLES). [ours]")
    # --- test.py ---
    d.DEFINE_integer("finetune_batch_size", U["finetune_batch_size"], "Batch for BN "
                     "re-estimation. [vat_tf test.py]")
    d.DEFINE_integer("finetune_iter", U["finetune_iter"], "BN re-estimation steps. "
                     "[vat_tf test.py]")
    # --- LVAT spellings ---
    for alias, target in ALIASES.items():
        d.DEFINE_alias(alias, target)
    d.DEFINE_string("data_set", None, "LVAT spelling of --dataset (SVHN | CIFAR10). [LVAT]")
    d.DEFINE_bool("is_aug", False, "LVAT: augmentation on (SVHN: --aug_trans; CIFAR10: "
                  "--aug_trans --aug_flip). [LVAT]")
    d.DEFINE_string("ae_type", "Glow", "LVAT: with --method=lvat, VAE | Glow. [LVAT]")
    _DEFINED.add("dataset")


def flag_values(FLAGS) -> dict:
    """The config fields from parsed flags, with LVAT spellings folded in."""
    from lvat_tf.config import Config, ConfigError

    # Every Config field is a flag of the same name (tests/test_flags.py holds
    # the defaults equal): the field list is the dataclass's, kept nowhere else.
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)}
    # The budget flags keep upstream's defaults; not given, they are resolved
    # per dataset (digits is scaled; DatasetDefaults.budget in lvat_tf/data/registry.py).
    for k in ("num_epochs", "epoch_decay_start", "num_iter_per_epoch"):
        if not FLAGS[k].present:
            values[k] = None
    if FLAGS["data_set"].present:
        values["dataset"] = FLAGS.data_set.lower()
    if values["method"] == "lvat":
        ae = (FLAGS.ae_type or "").lower()
        if ae not in ("vae", "glow"):
            raise ConfigError("ae_type", f"expected VAE or Glow with --method=lvat, got "
                              f"{FLAGS.ae_type!r}")
        values["method"] = f"lvat_{ae}"
    if FLAGS.is_aug:
        values["aug_trans"] = True
        if values["dataset"] == "cifar10":
            values["aug_flip"] = True
    return values


def config_from_flags(FLAGS, script: str = "train"):
    """Parsed flags -> a validated, frozen ``lvat_tf.config.Config``."""
    from lvat_tf.config import make_config

    return make_config(script=script, **flag_values(FLAGS))
