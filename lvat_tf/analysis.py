"""The LVAT paper's figures from finished runs (``run_scripts/analyze.py``).

* Fig. 5: histograms of the per-example consistency cost KL(p(y|x) || p(y|x_adv));
* Fig. 6: histograms of ||x - x_adv||_2;
* Fig. 7: image grids: x, Dec(Enc(x)), x_adv (LVAT) and x + r_vat (VAT);
* Fig. 8: histograms of the reconstruction error ||x - Dec(Enc(x))||_2 (LVAT);
* learning curves read back from the runs' TensorBoard logs, one line per run
  or (``seed_curves``, written by ``reproduce.py``) per variant over its seeds;
* ``index.html`` showing them.

Every run is analysed with its own method's perturbation (LVAT-VAE / LVAT-Glow
in the latent space, VAT in input space; baseline / MAT runs with the VAT
direction at their epsilon), the classifier in inference mode, on a fixed
subset of the test set.
"""
import glob
import html
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lvat_tf.generative import model_dir as model_dir_lib
from lvat_tf.regularizers import methods
from lvat_tf.regularizers.lvat import lvat_glow_perturbation, lvat_vae_perturbation
from lvat_tf.regularizers.mat import per_sample_kl
from lvat_tf.regularizers.vat import virtual_adversarial_perturbation
from lvat_tf.trained import load_trained_classifier


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def run_perturbations(log_dir: str, num_examples: int = 500, seed: int = 0,
                      bn_mode: str = "moving") -> dict:
    """Loads a finished run and computes x, x_adv, costs (and reconstructions for LVAT).

    Args:
      log_dir: a finished run.
      num_examples: the first test images used (one batch).
      seed: the random start directions.
      bn_mode: the classifier's batch norm for every pass: ``moving`` (inference,
        the figures' default) or ``batch`` (the statistics of the batch itself,
        as in training's clean and perturbed passes, without updating them).
        Dropout is off either way.

    Returns:
      dict with ``label``, ``method``, ``x`` (N, H, W, C) model input, ``x_adv``,
      ``cost`` (N,) per-example KL, ``dist`` (N,) ||x - x_adv||, and for LVAT
      ``x_rec`` and ``rec_err`` (N,); ``display_offset`` maps inputs to [0, 1].
    """
    cfg, clf, data, _ = load_trained_classifier(log_dir)
    x = tf.constant(data.x_eval[:num_examples])
    spec = methods.get_method(cfg.method)

    def forward(v):
        return clf(v, bn_mode=bn_mode)

    clean = forward(x)
    rng = tf.random.Generator.from_seed(seed)
    out = {"label": f"{os.path.basename(os.path.normpath(log_dir))} ({cfg.method})",
           "log_dir": log_dir, "method": cfg.method, "x": x.numpy(),
           "display_offset": 0.0 if spec.input_scaling == "unit" else 0.5}
    if spec.generative:
        gen_dir = cfg.generative_model_dir or os.path.join(log_dir, "generative")
        gen, _ = model_dir_lib.load(gen_dir)
        if spec.generative == "vae":
            d = rng.normal([x.shape[0], gen.latent_dim])
            z, r = lvat_vae_perturbation(forward, gen, x, clean, d, cfg.epsilon, cfg.xi,
                                         cfg.num_power_iterations, cfg.power_iteration)
            x_rec, x_adv = gen.decode(z), gen.decode(z + r)
        else:
            (hy, wy, cy), (hz, wz, cz) = gen.latent_shapes
            d = [rng.normal([x.shape[0], hy, wy, cy]), rng.normal([x.shape[0], hz, wz, cz])]
            (y, z), (r_y, r_z) = lvat_glow_perturbation(
                forward, gen, x, clean, d, cfg.epsilon, cfg.xi, cfg.num_power_iterations,
                cfg.power_iteration, seed=[seed, 1])
            x_rec, x_adv = gen.decode(y, z), gen.decode(y + r_y, z + r_z)
        out["x_rec"] = x_rec.numpy()
        out["rec_err"] = _l2(x - x_rec)
    else:
        d = rng.normal(x.shape)
        r = virtual_adversarial_perturbation(forward, x, clean, d, cfg.epsilon, cfg.xi,
                                             cfg.num_power_iterations, cfg.power_iteration)
        x_adv = x + r
    out["x_adv"] = x_adv.numpy()
    out["cost"] = per_sample_kl(clean, forward(x_adv)).numpy()
    out["dist"] = _l2(x - x_adv)
    return out


def _l2(t):
    return tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(t, [t.shape[0], -1])), 1)).numpy()


def _hist(runs: List[dict], key: str, xlabel: str, title: str, path: str) -> bool:
    runs = [r for r in runs if key in r]
    if not runs:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    # Shared bins; a degenerate range (e.g. VAT's ||r|| = epsilon for every
    # example, Glow's exact reconstructions) gets a small width around it.
    vals = np.concatenate([np.asarray(r[key], np.float64) for r in runs])
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(1e-3 * max(abs(lo), abs(hi)), 1e-6)
    bins = np.linspace(lo - pad, hi + pad, 41) if hi - lo < 2 * pad else \
        np.linspace(lo, hi, 41)
    for r in runs:
        ax.hist(r[key], bins=bins, alpha=0.55, label=r["label"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frequency")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _grid(runs: List[dict], path: str, n: int = 8) -> bool:
    rows, labels = [], []
    for r in runs:
        off = r["display_offset"]
        if not labels or labels[-1][0] != "x":
            rows.append(r["x"][:n] + off)
            labels.append(("x", "x"))
        if "x_rec" in r:
            rows.append(r["x_rec"][:n] + off)
            labels.append(("rec", f"Dec(Enc(x)) {r['label']}"))
        rows.append(r["x_adv"][:n] + off)
        labels.append(("adv", f"x_adv {r['label']}"))
    plt = _plt()
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0), dpi=110,
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            img = np.clip(row[j], 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        axes[i][0].set_title(labels[i][1], fontsize=6, loc="left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def read_scalars(log_dir: str) -> Dict[str, Dict[str, list]]:
    """{"train"/"test": {tag: [(step, value), ...]}} from a run's TensorBoard files."""
    out = {}
    for split in ("train", "test"):
        series: Dict[str, list] = {}
        for path in sorted(glob.glob(os.path.join(log_dir, "tb", split, "events.*"))):
            for event in tf.compat.v1.train.summary_iterator(path):
                for v in event.summary.value:
                    if v.HasField("tensor"):
                        arr = tf.make_ndarray(v.tensor)
                        if arr.ndim:  # histograms (collapse/predicted_class): not a scalar
                            continue
                        val = float(arr)
                    else:
                        val = float(v.simple_value)
                    series.setdefault(v.tag, []).append((int(event.step), val))
        out[split] = series
    return out


def unique_labels(runs: Sequence[dict]) -> List[str]:
    """Legend names that tell the runs apart.

    ``reproduce.py`` names every run directory ``seed<S>-data<D>`` under its
    variant, so a VAT and an LVAT run of the same seed share a basename; the
    method is added, and where labels still clash, as many parent directories
    as it takes (the same run given twice keeps its clash).

    Args:
      runs: dicts with ``log_dir`` and ``method`` (``run_perturbations`` output).
    """
    def name(r, depth):
        parts = os.path.normpath(r["log_dir"]).split(os.sep)[-depth:]
        return f"{'/'.join(parts)} ({r['method']})"
    labels = [name(r, 1) for r in runs]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 64:
        depth += 1
        labels = [name(r, depth) if labels.count(lab) > 1 else lab
                  for r, lab in zip(runs, labels)]
    return labels


def _points(scalars: dict, split: str, tag: str) -> list:
    """[(step, value), ...] of one tag, written as ``tag`` or ``<split>_<tag>``, in file order."""
    return scalars.get(split, {}).get(tag) or scalars.get(split, {}).get(f"{split}_{tag}") or []


def learning_curves(named_dirs: Sequence[Tuple[str, str]], path: str) -> int:
    """Plots train loss, train xe_loss and test accuracy, one line per run.

    Args:
      named_dirs: (legend label, log_dir) pairs; labels should be unique.
      path: the PNG to write.

    Returns:
      How many runs drew at least one line (0: nothing to plot).
    """
    data = [(label, read_scalars(d)) for label, d in named_dirs]
    panels = [("train", "loss"), ("train", "xe_loss"), ("test", "accuracy")]
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), dpi=110)
    drew = set()
    for ax, (split, tag) in zip(axes, panels):
        for name, sc in data:
            pts = _points(sc, split, tag)
            if pts:
                steps, vals = zip(*sorted(pts))
                ax.plot(steps, vals, marker="o", markersize=3, label=name)
                drew.add(name)
        ax.set_title(f"{split} {tag}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return len(drew)


def _series(scalars: dict, split: str, tag: str) -> Dict[int, float]:
    """{step: value} of one tag; a step a resumed run wrote again keeps its last value."""
    return dict(_points(scalars, split, tag))


def seed_curves(groups: Sequence[Tuple[str, Sequence[str]]], path: str,
                panels: Sequence[Tuple[str, str]] = (("train", "xe_loss"), ("train", "loss"),
                                                     ("test", "accuracy"))) -> dict:
    """Learning curves of several variants over their seeds, one line per variant.

    Each line is the mean over the variant's runs at the steps every one of them
    logged, with the band between the lowest and highest run: with a few seeds
    the band shows the whole spread rather than a ±std that assumes many.
    Runs that resume write a step again; the last value written is kept.

    Args:
      groups: (label, [log_dir, ...]) per variant.
      path: the PNG to write.
      panels: (split, tag) per panel: ``train``'s epoch means, ``test``'s
        periodic evaluation.

    Returns:
      {label: {"split/tag": {"steps": [...], "mean": [...], "min": [...],
      "max": [...], "runs": n}}} for what was drawn ({} when nothing was).
    """
    data = [(label, [read_scalars(d) for d in dirs]) for label, dirs in groups]
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), dpi=110)
    axes = np.atleast_1d(axes)
    out: dict = {}
    for ax, (split, tag) in zip(axes, panels):
        for label, runs in data:
            series = [_series(sc, split, tag) for sc in runs]
            series = [x for x in series if x]
            if not series:
                continue
            steps = sorted(set.intersection(*(set(x) for x in series)))
            if not steps:
                continue
            vals = np.array([[x[t] for t in steps] for x in series])
            mean, lo, hi = vals.mean(0), vals.min(0), vals.max(0)
            (line,) = ax.plot(steps, mean, marker="o", markersize=3,
                              label=f"{label} (n={len(series)})")
            if len(series) > 1:
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
            out.setdefault(label, {})[f"{split}/{tag}"] = {
                "steps": steps, "mean": mean.tolist(), "min": lo.tolist(), "max": hi.tolist(),
                "runs": len(series)}
        ax.set_title(f"{split} {tag} (mean over seeds, min-max band)", fontsize=8)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    if out:
        fig.savefig(path)
    plt.close(fig)
    return out


def _final_error(log_dir: str) -> str:
    """The run's test error (%) from results.json, or '-' for an unfinished run."""
    path = os.path.join(log_dir, "results.json")
    if not os.path.exists(path):
        return "-"
    with open(path) as f:
        return f"{json.load(f)['test_error']:.2f}"


def analyze(log_dirs: List[str], output_dir: str, num_examples: int = 500) -> List[str]:
    """Writes the figures and index.html; returns the PNG file names written."""
    os.makedirs(output_dir, exist_ok=True)
    runs = [run_perturbations(d, num_examples) for d in log_dirs]
    for r, label in zip(runs, unique_labels(runs)):
        r["label"] = label
    written = []
    figs = [
        ("fig5_consistency_cost.png", lambda p: _hist(
            runs, "cost", "consistency cost KL(p(y|x) || p(y|x_adv))",
            "Fig. 5: consistency cost", p)),
        ("fig6_distance.png", lambda p: _hist(runs, "dist", "||x - x_adv||_2",
                                              "Fig. 6: distance to x_adv", p)),
        ("fig7_images.png", lambda p: _grid(runs, p)),
        ("fig8_reconstruction_error.png", lambda p: _hist(
            runs, "rec_err", "||x - Dec(Enc(x))||_2", "Fig. 8: reconstruction error", p)),
        ("learning_curves.png",
         lambda p: learning_curves([(r["label"], r["log_dir"]) for r in runs], p) > 0),
    ]
    for name, make in figs:
        if make(os.path.join(output_dir, name)):
            written.append(name)
    rows = []
    for r in runs:
        rec = f"{np.mean(r['rec_err']):.3f}" if "rec_err" in r else "-"
        rows.append(f"<tr><td>{html.escape(r['label'])}</td><td>{_final_error(r['log_dir'])}</td>"
                    f"<td>{np.mean(r['cost']):.4f}</td>"
                    f"<td>{np.mean(r['dist']):.3f}</td><td>{rec}</td></tr>")
    page = ("<html><head><meta charset='utf-8'><title>lvat_tf analysis</title></head><body>"
            "<h1>lvat_tf analysis</h1><table border=1 cellpadding=4><tr><th>run</th>"
            "<th>test error %</th>"
            "<th>mean cost</th><th>mean ||x - x_adv||</th><th>mean rec. error</th></tr>"
            + "".join(rows) + "</table>"
            + "".join(f"<h2>{n}</h2><img src='{n}'>" for n in written) + "</body></html>")
    with open(os.path.join(output_dir, "index.html"), "w") as f:
        f.write(page)
    return written
