"""Is a bad MNIST-100 seed bad because of where it starts or because of how it travels?
(issue 11, session 18)

`--init_seed=S` draws the classifier's initial weights from seed S while batches, dropout and
directions still come from `--seed`. For every finished run directory given this prints the
two seeds, the final test error (after vat_tf's BN re-estimation, as results.json reports it),
the periodic test errors, and the test set's largest confusions (true class -> predicted
class: count and share of the true class), so runs that share a start or a trajectory can be
read side by side. The confusion matrix is recomputed from the saved classifier (a few
seconds per run).

  python docs/measurements/start_or_trajectory.py RUN_DIR [RUN_DIR ...]
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from class_merging import confusion  # noqa: E402  (a sibling measurement script)


def largest_confusions(m, n=2):
    """[(true, predicted, count, share of the true class)], the n largest off-diagonal cells."""
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:n]
    rows = m.sum(1)
    return [(int(t), int(p), int(off[t, p]), float(off[t, p] / max(rows[t], 1)))
            for t, p in (np.unravel_index(i, m.shape) for i in order)]


def describe(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        res = json.load(f)
    cfg = res["config"]
    init_seed = cfg.get("init_seed")
    periodic = ", ".join(f"{100 * (1 - e['accuracy']):.1f}" for e in res.get("periodic_eval", []))
    m, _ = confusion(run_dir)
    conf = "; ".join(f"{t}->{p} {c} ({100 * s:.0f} % of {t})"
                     for t, p, c, s in largest_confusions(m))
    return (f"{run_dir}\n  seed {cfg['seed']}, init_seed {init_seed if init_seed is not None else cfg['seed']}"
            f" | test error {res['test_error']:.2f} % | periodic % [{periodic}]\n"
            f"  largest confusions: {conf}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: start_or_trajectory.py RUN_DIR [RUN_DIR ...]")
    for d in sys.argv[1:]:
        if not os.path.isfile(os.path.join(d, "results.json")):
            sys.exit(f"{d}: no results.json (is the run finished?)")
        print(describe(d))
