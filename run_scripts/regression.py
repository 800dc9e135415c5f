"""Compare finished runs with the published tables (ours vs published, in standard deviations).

    python run_scripts/regression.py --log_dir=runs/svhn_vat [--runs=runs/a,runs/b] [--output=F.json]

For each run: the cells of ``lvat_tf/resources/published_numbers.json`` with
its dataset, labels, augmentation and method (and ZCA on CIFAR-10). A run that
follows a cell's full recipe is compared (tolerance: lvat_tf/regression.py); a
scaled-down run is reported as such and never compared as if it were full.
Exit status 1 when a full-recipe run is worse than published beyond the
tolerance; 0 otherwise.
"""
import json

import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_list("runs", [], "More run directories to check.")
flags.DEFINE_string("output", None, "Write the verdicts as JSON here.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf import regression
    from lvat_tf.config import ConfigError

    dirs = ([FLAGS.log_dir] if FLAGS.log_dir else []) + list(FLAGS.runs)
    out, worse = [], 0
    if not dirs:
        raise ConfigError("log_dir", "a finished run directory is required")
    table = regression.load_table()
    for d in dirs:
        facts = regression.run_facts(d)
        rows = regression.matching_rows(facts, table)
        label = (f"{d}: {facts['method']} on {facts['dataset']} {facts['setting'].upper()} "
                 f"({facts['num_labeled_examples']} labels{', aug' if facts['augmentation'] else ''}"
                 f"{', ZCA' if facts['zca'] else ''}), {facts['updates']} updates: "
                 f"test error {facts['test_error']:.2f} %")
        print(label)
        if not rows:
            print("  no published cell for this setting")
        for r in rows:
            v = regression.assess(facts, r)
            worse += v.status == "WORSE"
            print("  " + v.line())
            out.append({"log_dir": d, "status": v.status, "ours": v.ours,
                        "published": r["error"], "std": r.get("std"), "sigmas": v.sigmas,
                        "tolerance": v.tolerance, "source": r["source"], "why": v.why})
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(out, f, indent=2)
    if worse:
        _common.fail(f"{worse} full-recipe comparison(s) worse than published beyond tolerance")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
