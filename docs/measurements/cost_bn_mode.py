"""Consistency cost of finished runs under their own perturbation, with the classifier's batch
norm on the moving averages (inference, as analyze.py's Fig. 5) and on the batch's own
statistics (as training's clean and perturbed passes). Dropout off in both.

    python docs/measurements/cost_bn_mode.py NUM_EXAMPLES RUN_DIR [RUN_DIR ...]

The whole NUM_EXAMPLES-image batch is one BN batch in "batch" mode (training used 64).
"""
import sys

import numpy as np

from lvat_tf.analysis import run_perturbations

n = int(sys.argv[1])
for log_dir in sys.argv[2:]:
    row = {}
    for mode in ("moving", "batch"):
        r = run_perturbations(log_dir, n, bn_mode=mode)
        row[mode] = (float(np.mean(r["cost"])), float(np.median(r["cost"])))
    print(f"{log_dir} ({r['method']}): mean (median) cost, moving averages "
          f"{row['moving'][0]:.4f} ({row['moving'][1]:.4f}), batch statistics "
          f"{row['batch'][0]:.4f} ({row['batch'][1]:.4f}); ||x - x_adv|| {np.mean(r['dist']):.3f}")
