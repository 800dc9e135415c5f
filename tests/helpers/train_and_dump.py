"""Trains a tiny run with the strategy given on the command line and dumps its variables.

    python train_and_dump.py LOG_DIR STRATEGY NUM_CPU_DEVICES METHOD STEPS [POWER_ITERATION]

Used by tests/test_distribute.py in fresh processes (logical CPU devices and
multi-worker strategies must be set up before TensorFlow starts).
"""
import json
import os
import sys

import numpy as np


def main():
    log_dir, strategy, n_cpu, method, steps = sys.argv[1:6]
    power_iteration = sys.argv[6] if len(sys.argv) > 6 else "exact"
    from lvat_tf.config import make_config
    from lvat_tf.training import run
    import tensorflow as tf

    cfg = make_config(dataset="synthetic", model="tiny_cnn", method=method, batch_size=8,
                      ul_batch_size=16, num_epochs=1, epoch_decay_start=0,
                      num_iter_per_epoch=int(steps), eval_freq=1, eval_batch_size=50,
                      finetune_iter=0, num_labeled_examples=20, log_dir=log_dir, epsilon=1.0,
                      power_iteration=power_iteration, distribution_strategy=strategy,
                      num_cpu_devices=int(n_cpu))
    res = run.train_and_evaluate(cfg, verbose=0)
    # Multi-worker: the chief's checkpoints are in LOG_DIR, worker i's in
    # LOG_DIR/workers/i (CKPT_DIR); each process dumps to DUMP_TO.
    out = os.environ.get("DUMP_TO", log_dir + "/vars.npz")
    ckpt_dir = os.environ.get("CKPT_DIR", log_dir + "/checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    np.savez(out, **{k.replace("/", "|"): tf.train.load_variable(latest, k)
                     for k, _ in tf.train.list_variables(latest) if "OBJECT" not in k})
    print("RESULT " + json.dumps({"replicas": res["distribution"]["replicas"],
                                  "test_error": res["test_error"],
                                  "periodic_eval": res["periodic_eval"]}))


if __name__ == "__main__":
    main()
