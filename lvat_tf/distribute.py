"""tf.distribute for the training step: strategies, global-batch slicing, synchronised statistics.

Design goal: a run on R replicas computes what one device computes on the same
global batch, so numbers do not depend on the hardware and a run may be
resumed under another strategy (``--distribution_strategy`` is resume-free).

* Input: every worker assembles the global batch from the same seeded
  pipeline and keeps its contiguous slice; replica i of the run gets rows
  [i*B/R, (i+1)*B/R) of the labeled and of the unlabeled batch. For the
  in-memory datasets used here this costs each worker the (cheap) assembly of
  the whole batch; it buys identical batches for any R.
* Randomness: dropout masks and the power iteration's random start are drawn
  for the global batch from the step's seed and sliced per replica
  (:func:`replica_random`), so they equal the single-device draws.
* Batch norm: batch statistics are all-reduced over replicas (synchronised
  BN). Upstream normalises with the statistics of the whole batch of its one
  GPU; per-replica statistics would make the result depend on R.
* Losses are means over the replica's slice; the train step differentiates
  loss / R and Keras sums the gradients over replicas, which is the gradient
  of the global-batch mean.
* MAT's mixture statistics (class counts, sums, scatters) are all-reduced.
* Variables updated inside the step (BN moving statistics, the mixture,
  Adam's beta1 power) use ``only_first_replica`` aggregation: with the
  synchronised statistics every replica computes the same value.
"""
import json
import os
from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


class DistributionError(ValueError):
    """A strategy cannot be set up as asked; ``str(e)`` names the flag or variable."""


def configure_cpu_devices(n: int) -> None:
    """Splits the host CPU into ``n`` logical devices (replicas for ``mirrored`` without GPUs).

    Must run before TensorFlow initialises its devices; calling it again with
    the same ``n`` is a no-op.

    Raises:
      DistributionError: TF already started with another number of CPU devices.
    """
    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise DistributionError(
                f"--num_cpu_devices={n}: TensorFlow already started with {have} CPU device(s) "
                "in this process; set it before any TensorFlow op runs (a fresh process)"
            ) from None


def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise DistributionError("--distribution_strategy=multi_worker_mirrored: the TF_CONFIG "
                                "environment variable is not set (expected JSON with "
                                "cluster.worker and task)")
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        task = tf_config["task"]
        if task["type"] not in ("worker", "chief") or not workers:
            raise ValueError
        int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise DistributionError("TF_CONFIG: expected JSON {\"cluster\": {\"worker\": [host:port, "
                                "...]}, \"task\": {\"type\": \"worker\", \"index\": i}}, got "
                                f"{raw[:200]!r}") from None
    return tf_config


def make_strategy(name: str, num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """The ``--distribution_strategy``.

    Args:
      name: ``default`` (one device), ``mirrored`` (all local GPUs, else the
        ``num_cpu_devices`` logical CPUs), ``multi_worker_mirrored`` (TF_CONFIG
        cluster; each worker's GPUs or CPU) or ``tpu`` (an attached TPU).
      num_cpu_devices: logical CPU devices to create (see :func:`configure_cpu_devices`).

    Raises:
      DistributionError: unknown name, missing TF_CONFIG, no TPU.
    """
    if name not in STRATEGIES:
        raise DistributionError(f"--distribution_strategy: expected one of "
                                f"{'|'.join(STRATEGIES)}, got {name!r}")
    if name == "multi_worker_mirrored":
        _tf_config()
        # Collectives over gRPC between the workers of TF_CONFIG; created
        # before any other op (TensorFlow requires it for this strategy).
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        configure_cpu_devices(num_cpu_devices)
        if name == "default":
            return tf.distribute.get_strategy()
        if name == "mirrored":
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
            ops = None if gpus else tf.distribute.ReductionToOneDevice()
            strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
        else:
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
            except (ValueError, RuntimeError, tf.errors.OpError) as e:
                raise DistributionError(f"--distribution_strategy=tpu: no TPU found "
                                        f"({str(e).splitlines()[0][:120]})") from None
            strategy = tf.distribute.TPUStrategy(resolver)
    logging.info("Distribution: %s with %d replicas", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory (worker 0 / chief, or single-process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return (resolver.task_type == "chief" or
            (resolver.task_type == "worker" and resolver.task_id == 0 and
             "chief" not in resolver.cluster_spec().as_dict()))


def worker_index(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0) if resolver is not None else 0


def sync_context():
    """The replica context when several replicas run in sync, else None.

    None in cross-replica context (callbacks, evaluation) and on one device,
    where the single-device code paths run unchanged.
    """
    if tf.distribute.in_cross_replica_context():
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def num_replicas() -> int:
    ctx = sync_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def all_reduce_sum(values: Sequence[tf.Tensor]):
    """Sums over replicas (identity on one device); differentiable."""
    ctx = sync_context()
    if ctx is None:
        return list(values)
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(values))


def replica_random(draw: Callable, shape, seed, dtype=tf.float32) -> tf.Tensor:
    """``draw(shape, seed=, dtype=)`` for the global batch, this replica's rows.

    Args:
      draw: a stateless sampler, e.g. ``tf.random.stateless_normal``.
      shape: the replica's shape (B_local, ...), static or a tensor.
      seed: shape-(2,) stateless seed, the same on every replica.

    Returns:
      The rows [id*B_local, (id+1)*B_local) of the draw for (R*B_local, ...): on
      one device simply ``draw(shape, seed)``.
    """
    ctx = sync_context()
    if ctx is None:
        return draw(shape, seed=seed, dtype=dtype)
    shape = tf.convert_to_tensor(shape, tf.int32)
    b = shape[0]
    full = draw(tf.concat([[b * ctx.num_replicas_in_sync], shape[1:]], 0), seed=seed,
                dtype=dtype)
    rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return full[rid * b:(rid + 1) * b]


def distribute_train_dataset(strategy, make_dataset: Callable[[], tf.data.Dataset],
                             batch_sizes: dict):
    """The training batches of ``make_dataset()`` split over the strategy's replicas.

    Args:
      strategy: the run's strategy.
      make_dataset: builds the global-batch dataset (dict elements).
      batch_sizes: {key: global batch size} of each element (x_l: B, x_u: U...).

    Returns:
      A distributed dataset whose replica i receives rows [i*n/R, (i+1)*n/R) of
      every global batch (see the module docstring); the dataset itself when
      there is one replica.
    """
    r = strategy.num_replicas_in_sync
    if r == 1:
        return make_dataset()
    for k, n in batch_sizes.items():
        if n % r:
            raise DistributionError(f"--{'ul_' if k == 'x_u' else ''}batch_size={n}: expected a "
                                    f"multiple of the {r} replicas")

    def dataset_fn(ctx: tf.distribute.InputContext):
        local = r // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * local

        def split(batch):
            parts = {}
            for k, v in batch.items():
                per = batch_sizes["x_u" if k == "x_u" else "x_l"] // r
                mine = v[first * per:(first + local) * per]
                parts[k] = tf.reshape(mine, [local, per] + v.shape[1:].as_list())
            return tf.data.Dataset.from_tensor_slices(parts)

        # Consecutive elements go to the worker's replicas in turn.
        return make_dataset().flat_map(split)

    return strategy.distribute_datasets_from_function(dataset_fn)
