"""Step-time measurement of the training step, per method, against a measured matmul peak.

Used by ``run_scripts/benchmark.py``; timings never live in unit tests.
"""
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from lvat_tf.config import make_config
from lvat_tf.data import registry as data_registry
from lvat_tf.models import registry as model_registry
from lvat_tf.regularizers import methods
from lvat_tf.training.model import SSLModel
from lvat_tf.training.optimizer import UpstreamAdam
from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.config import glow_defaults
from lvat_tf.precision import MIXED_POLICY, dtype_policy, mixed_precision_policy
from lvat_tf.regularizers.power_iteration import power_iteration


def matmul_peak_gflops(n=2048, repeats=10, dtype=tf.float32):
    """Measured dense matmul rate (GFLOP/s) of this device, median of ``repeats``."""
    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    mm(a, b).numpy()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).numpy()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def time_upstream_step(meta_path: str, steps: int = 3, warmup: int = 1) -> dict:
    """Median seconds of upstream vat_tf's own training step, in this process.

    ``meta_path`` is ``../shared/perf/vat_tf_train_step.meta`` (the unmodified
    upstream graph: Conv-Large, CE + VAT, Adam, batches 32 + 128 of 32x32x3,
    xi 1e-6, eps 8, dropout on), run in its own tf.compat.v1 graph and session
    beside our eager steps, so that the ratio ours/upstream is measured on the
    same machine in the same run.
    """
    from tensorflow.python.framework import config as tf_config

    tf1 = tf.compat.v1
    # Upstream's graph has unseeded random ops (dropout, the VAT draw), which TF
    # refuses under op determinism (enabled process-wide by any train run).
    deterministic = tf_config.is_op_determinism_enabled()
    if deterministic:
        tf_config.disable_op_determinism()
    try:
        return _time_upstream_graph(tf1, meta_path, steps, warmup)
    finally:
        if deterministic:
            tf.config.experimental.enable_op_determinism()


def _time_upstream_graph(tf1, meta_path, steps, warmup):
    graph = tf.Graph()
    with graph.as_default():
        tf1.train.import_meta_graph(meta_path)
        x, y, u = (tf1.get_collection("inputs_" + n)[0] for n in ("x_l", "y_l", "x_u"))
        train_op = tf1.get_collection("train_op")[0]
        init = tf1.get_collection("init_op")[0]
        rng = np.random.RandomState(0)
        feed = {x: rng.uniform(-.5, .5, (32, 32, 32, 3)).astype(np.float32),
                y: np.eye(10, dtype=np.float32)[rng.randint(0, 10, 32)],
                u: rng.uniform(-.5, .5, (128, 32, 32, 3)).astype(np.float32)}
        with tf1.Session(graph=graph) as sess:
            sess.run(init)
            for _ in range(warmup):
                sess.run(train_op, feed)
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                sess.run(train_op, feed)
                times.append(time.perf_counter() - t)
    return {"method": "upstream_vat_tf", "model": "conv_large", "dataset": "cifar10",
            "batch_size": 32, "ul_batch_size": 128, "power_iteration": "finite_difference",
            "jit_compile": False, "mixed_precision": False,
            "ms_per_step": round(1000 * statistics.median(times), 2),
            "images_per_s": round(160 / statistics.median(times), 1), "gflop_per_step": None,
            "achieved_gflops": None, "steps_timed": steps, "generative": None}


def step_flops(concrete_fn):
    """FLOPs of one call of a concrete function (ops with registered FLOP stats)."""
    graph = concrete_fn.graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=graph, options=opts)
    return int(prof.total_float_ops) if prof is not None else 0


def build_generative(kind, image_shape, arch=None):
    """An untrained generative model (step time does not depend on training)."""
    if kind == "vae":
        arch = dict({"latent_dim": 128, "widths": [128, 256, 512]}, **(arch or {}))
    else:
        d = glow_defaults("cifar10")
        arch = dict({"num_levels": d["num_levels"], "num_steps": d["num_steps"],
                     "width": d["width"]}, **(arch or {}))
    model = model_dir_lib.build(kind, arch, tuple(image_shape))
    model(tf.zeros((1,) + tuple(image_shape)))
    model.trainable = False
    return model, arch


def benchmark_method(method, model_name, dataset, batch_size, ul_batch_size, steps=10, warmup=2,
                     generative_arch=None, **overrides):
    """See :func:`_benchmark_method`; under ``mixed_precision=True`` the classifier is bfloat16."""
    kind = methods.get_method(method).generative
    gen = None
    if kind:  # the generative model stays float32, as in training
        spec = data_registry.get_spec(dataset)
        shape = tuple(spec.image_shape)
        if max(shape[:2]) < 32:
            shape = (32, 32, shape[2])
        keras.utils.set_random_seed(0)
        gen = build_generative(kind, shape, generative_arch)
    with mixed_precision_policy(overrides.get("mixed_precision", False)):
        return _benchmark_method(method, model_name, dataset, batch_size, ul_batch_size, steps,
                                 warmup, gen, **overrides)


def _benchmark_method(method, model_name, dataset, batch_size, ul_batch_size, steps, warmup,
                      generative, **overrides):
    """Median ms per training step of one method on random data of the dataset's shape.

    LVAT methods get an untrained generative model of ``generative_arch``
    (default: the paper's VAE / upstream's Glow) and inputs padded to 32x32
    as in training.
    """
    spec = data_registry.get_spec(dataset)
    cfg = make_config(dataset=dataset, model=model_name, method=method, batch_size=batch_size,
                      ul_batch_size=ul_batch_size, **overrides)
    keras.utils.set_random_seed(0)
    shape = tuple(spec.image_shape)
    kind = methods.get_method(method).generative
    gen, arch = generative or (None, None)
    if kind and max(shape[:2]) < 32:
        shape = (32, 32, shape[2])
    clf = model_registry.build_from_config(cfg, spec.num_classes)
    feats, _ = clf(tf.zeros((2,) + shape), bn_mode="moving", return_features=True)
    regs = methods.build_regularizers(cfg, gen, feature_dim=int(feats.shape[-1]),
                                      num_classes=spec.num_classes,
                                      generative_decoder=model_dir_lib.decoder_for(
                                          gen, shape, cfg.generative_dtype))
    model = SSLModel(clf, regs, seed=0)
    model.compile(optimizer=UpstreamAdam(cfg.learning_rate, name="upstream_adam"), jit_compile=cfg.jit_compile)
    model.optimizer.build(clf.trainable_variables)
    rng = np.random.RandomState(0)
    lo = 0.0 if kind else -0.5
    data = {"x_l": tf.constant(rng.uniform(lo, lo + 1, (batch_size,) + shape), tf.float32),
            "y_l": tf.constant(rng.randint(0, spec.num_classes, batch_size)),
            "x_u": tf.constant(rng.uniform(lo, lo + 1, (ul_batch_size,) + shape), tf.float32)}
    step = tf.function(model.train_step, jit_compile=cfg.jit_compile or None)
    concrete = step.get_concrete_function(data)
    flops = step_flops(concrete)
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), step(data))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step(data))
        times.append(time.perf_counter() - t)
    ms = 1000 * statistics.median(times)
    return {"method": method, "model": model_name, "dataset": dataset,
            "batch_size": batch_size, "ul_batch_size": ul_batch_size,
            "power_iteration": cfg.power_iteration, "jit_compile": cfg.jit_compile,
            "mixed_precision": cfg.mixed_precision, "generative_dtype": cfg.generative_dtype,
            "ms_per_step": round(ms, 2),
            "images_per_s": round((batch_size + (ul_batch_size if cfg.method != "baseline"
                                                 else 0)) / (ms / 1000), 1),
            "gflop_per_step": round(flops / 1e9, 2),
            "achieved_gflops": round(flops / 1e9 / (ms / 1000), 1), "steps_timed": steps,
            "generative": arch}


def direction_cosines(model_name, dataset, batch_size=32, xi=1e-6, seed=0, data=None):
    """How well each precision / mode recovers the VAT direction, against float64 exact.

    One classifier's weights are copied into float64, float32 and
    mixed-bfloat16 builds of it; on the same inputs, dropout masks and random
    start d, the power iteration's direction is computed as

    * ``bfloat16_exact``: mixed bfloat16 (float32 softmax / KL / BN statistics),
      the exact Hessian-vector product as a training step computes it (the
      classifier's own tangent pass, ``Classifier.linearize``; ``--mixed_precision``);
    * ``float32_exact``: float32, the same product (``--power_iteration=exact``);
    * ``float32_finite_difference``: float32 at ``xi`` (upstream).

    The float64 reference takes its J d from TensorFlow's forward mode instead,
    an independent path.

    Args:
      model_name, dataset: the classifier and the image shape.
      batch_size: images (random uniform in [-0.5, 0.5] unless ``data``).
      data: optional (B, H, W, C) float32 inputs.

    Returns:
      {variant: {"mean": mean cosine, "min": min cosine}} over the batch.
    """

    spec = data_registry.get_spec(dataset)
    cfg = make_config(dataset=dataset, model=model_name, method="vat")
    shape = tuple(spec.image_shape)
    rng = np.random.RandomState(seed)
    x = data if data is not None else rng.uniform(-0.5, 0.5, (batch_size,) + shape)

    def build(policy):
        with dtype_policy(policy):
            keras.utils.set_random_seed(seed)
            clf = model_registry.build_from_config(cfg, spec.num_classes)
            clf(tf.zeros((2,) + shape, clf.compute_dtype), bn_mode="moving")
        return clf

    ref = build("float32")
    dseed = tf.constant([seed, 1], tf.int64)
    d0 = tf.random.stateless_normal((len(x),) + shape, seed=[seed, 2], dtype=tf.float64)

    def direction(clf, dtype, mode):
        xt = tf.constant(x, dtype)

        def fwd(r):
            return clf(xt + r, bn_mode="batch", dropout_seed=dseed)

        def linearize(r, t):
            return clf.linearize(xt + r, t, bn_mode="batch", dropout_seed=dseed)

        g = power_iteration(fwd, fwd(tf.zeros_like(xt)), tf.cast(d0, dtype), xi=xi, mode=mode,
                            linearize=None if dtype == tf.float64 else linearize)
        return tf.reshape(tf.cast(g, tf.float64), [len(x), -1]).numpy()

    clf64 = build("float64")
    for v64, v in zip(clf64.variables, ref.variables):
        v64.assign(tf.cast(v, v64.dtype))
    want = direction(clf64, tf.float64, "exact")
    bf = build(MIXED_POLICY)
    for vb, v in zip(bf.variables, ref.variables):
        vb.assign(v)
    got = {"bfloat16_exact": direction(bf, tf.float32, "exact"),
           "float32_exact": direction(ref, tf.float32, "exact"),
           "float32_finite_difference": direction(ref, tf.float32, "finite_difference")}
    out = {}
    for k, g in got.items():
        cos = np.sum(g * want, 1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(want, axis=1)
                                     + 1e-300)
        out[k] = {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)}
    return out
