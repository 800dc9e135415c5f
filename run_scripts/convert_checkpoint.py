"""Convert a vat_tf or LVAT TF1 checkpoint into a run directory of ours.

    python run_scripts/convert_checkpoint.py --upstream=vat_tf --checkpoint=PATH/model.ckpt \
        --dataset=cifar10 --data_dir=DIR --log_dir=runs/vat_tf_c10
    python run_scripts/convert_checkpoint.py --upstream=lvat --checkpoint=out/model.ckpt \
        --dataset=svhn --log_dir=runs/lvat_svhn
    python run_scripts/convert_checkpoint.py --upstream=vat_tf --checkpoint=PATH/model.ckpt \
        --dataset=cifar10 --preprocessing_from=UPSTREAM_DATA_DIR --log_dir=runs/vat_tf_c10

Only vat_tf's CIFAR-10 preprocessing (ZCA) is fitted on data: SVHN, MNIST,
Fashion-MNIST and every LVAT checkpoint convert with no data files and no
network; CIFAR-10 (vat_tf) needs --data_dir or --preprocessing_from.

Then: test.py --log_dir=OUT, export.py --log_dir=OUT, and (LVAT) train.py
--generative_model_dir=OUT/generative. --top_bn is read from the checkpoint
(a ``bfc_*`` top batch norm present or not); the dataset is not recorded by
upstream and must be given. Optimizer variables (Adam slots, beta powers) are
recognised and not converted; any other unexpected, missing or mis-shaped
variable stops the conversion with the names listed.
"""
import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_enum("upstream", None, ["vat_tf", "lvat"], "Which code wrote the checkpoint.")
flags.DEFINE_string("checkpoint", None, "TF1 checkpoint prefix (model.ckpt) or its directory.")
flags.DEFINE_string("dataset", None, "Dataset the checkpoint was trained on.")
flags.DEFINE_string("preprocessing_from", None, "vat_tf CIFAR-10: take the ZCA from this file "
                    "instead of fitting it on --data_dir: a run's preprocessing.npz, an .npz "
                    "with upstream's 'mean' (3072,) and 'components' (3072, 3072) (CHW order, as "
                    "vat_tf's cifar10.py saves them), or the directory of its mean.npy / "
                    "components.npy.")
flags.DEFINE_string("data_dir", None, "Data directory (as train.py; CIFAR-10's ZCA is fitted "
                    "on it, test.py evaluates on it).")
flags.DEFINE_float("epsilon", None, "Recorded in the run's config (upstream does not save it).")
flags.DEFINE_integer("num_labeled_examples", None, "Recorded in the run's config.")
flags.DEFINE_bool("tfds_download", True, "Allow tensorflow-datasets downloads.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf.upstream import convert

    _common.require(FLAGS, upstream="the upstream code base (vat_tf or lvat)",
                    checkpoint="the TF1 checkpoint",
                    dataset="the dataset the checkpoint was trained on",
                    log_dir="the new run directory")
    extra = {k: FLAGS[k].value for k in ("epsilon", "num_labeled_examples")
             if FLAGS[k].value is not None}
    summary = convert.convert(FLAGS.checkpoint, FLAGS.upstream, FLAGS.dataset.lower(),
                              FLAGS.log_dir, data_dir=FLAGS.data_dir,
                              tfds_download=FLAGS.tfds_download,
                              preprocessing_from=FLAGS.preprocessing_from, **extra)
    print(f"converted {summary['converted']} variables ({summary['method']}) into "
          f"{FLAGS.log_dir}; {len(summary['skipped_optimizer_variables'])} optimizer variables "
          "not converted")


if __name__ == "__main__":
    app.run(_common.entry_point(main))
