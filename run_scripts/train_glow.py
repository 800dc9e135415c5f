"""Train the LVAT Glow (geosada/LVAT glow/main.py) and save a generative-model directory.

    python run_scripts/train_glow.py --data_set=CIFAR10 --log_dir=runs/glow_cifar10  # upstream recipe
    python run_scripts/train_glow.py --dataset=digits --num_steps=300 --flow_steps=4 --width=32 \
        --log_dir=runs/glow_digits                                                    # minutes on a CPU
    python run_scripts/train.py --dataset=digits --method=lvat_glow --generative_model_dir=runs/glow_digits

The directory (weights + generative.json recording dataset, image shape,
preprocessing and architecture; checkpoints/ for resume; tb/ for
TensorBoard; reconstructions.png and samples.png) is what train.py
--generative_model_dir takes. Re-running the same command resumes.
"""
import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_string("dataset", "cifar10", "Dataset (LVAT glow/main.py default CIFAR10).")
flags.DEFINE_string("data_set", None, "LVAT spelling of --dataset (SVHN | CIFAR10).")
flags.DEFINE_string("data_dir", None, "Raw files or tfds directory (as train.py).")
flags.DEFINE_integer("num_steps", None, "Training steps. Default: upstream's schedule (15,601 "
                     "steps, 25,601 with --is_aug) for svhn/cifar10; scaled budgets for the "
                     "small datasets (DatasetDefaults.glow in lvat_tf/data/registry.py). "
                     "Fewer steps scale every schedule segment alike.")
flags.DEFINE_bool("is_aug", True, "Upstream glow/main.py: only lengthens the schedule "
                  "(no augmentation is applied).")
flags.DEFINE_integer("batch_size", 128, "Batch (upstream BATCH_SIZE).")
flags.DEFINE_integer("num_levels", None, "L, levels/scales (upstream N_FLOW_SCALES = 3).")
flags.DEFINE_integer("flow_steps", None, "K, steps per level (upstream N_FLOW_STEPS = 22).")
flags.DEFINE_integer("width", None, "Coupling-network width (upstream WIDTH_RESNET = 128).")
flags.DEFINE_integer("num_bits", 5, "Quantisation bits (upstream 5).")
flags.DEFINE_float("l2_weight", 1e-5, "L2 weight decay on all trainable variables (upstream).")
flags.DEFINE_integer("seed", 1, "Seed (data order, noise, 1x1-conv init).")
flags.DEFINE_integer("log_every", 50, "Steps between log lines/checkpoints (upstream 50).")
flags.DEFINE_bool("tfds_download", True, "Allow tensorflow-datasets downloads.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf.data import registry
    from lvat_tf.generative import model_dir
    from lvat_tf.generative.train_glow import GlowConfig, train_glow

    dataset = (FLAGS.data_set or FLAGS.dataset).lower()
    _common.require(FLAGS, log_dir="the directory to save the Glow in")
    d = registry.get_spec(dataset).defaults.glow_layout()  # one-line error if unknown
    # 0 / None = the dataset's default layout (flags documented so).
    values = dict(num_steps=d["train_steps"] if FLAGS.num_steps is None else FLAGS.num_steps,
                  num_levels=FLAGS.num_levels or d["num_levels"],
                  flow_steps=FLAGS.flow_steps or d["num_steps"], width=FLAGS.width or d["width"])
    cfg = GlowConfig(dataset=dataset, data_dir=FLAGS.data_dir, model_dir=FLAGS.log_dir,
                     is_aug=FLAGS.is_aug, batch_size=FLAGS.batch_size,
                     num_bits=FLAGS.num_bits, l2_weight=FLAGS.l2_weight, seed=FLAGS.seed,
                     log_every=FLAGS.log_every, tfds_download=FLAGS.tfds_download, **values)
    _, meta = train_glow(cfg)
    print(model_dir.summary_line(FLAGS.log_dir, meta))


if __name__ == "__main__":
    app.run(_common.entry_point(main))
