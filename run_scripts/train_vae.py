"""Train the LVAT VAE (geosada/LVAT vae/build_AE.py) and save a generative-model directory.

    python run_scripts/train_vae.py --dataset=digits --log_dir=runs/vae_digits
    python run_scripts/train.py --dataset=digits --method=lvat_vae --generative_model_dir=runs/vae_digits ...

The directory (weights + generative.json recording dataset, image shape,
preprocessing and architecture) is what train.py --generative_model_dir takes.
"""
import _common  # noqa: F401
from absl import app, flags

flags.DEFINE_string("dataset", "svhn", "Dataset (LVAT vae/config.py default SVHN).")
flags.DEFINE_string("data_dir", None, "Raw files or tfds directory (as train.py).")
flags.DEFINE_integer("num_epochs", None, "Epochs. Default depends on the dataset: svhn/cifar10 "
                     "300 (LVAT paper), mnist/fashion_mnist 10, digits 30.")
flags.DEFINE_integer("batch_size", 32, "Batch (LVAT BATCH_SIZE).")
flags.DEFINE_float("learning_rate", 2e-4, "Adam's initial learning rate (LVAT).")
flags.DEFINE_integer("latent_dim", 128, "Latent size (LVAT Z_SIZE).")
flags.DEFINE_list("widths", None, "Encoder conv widths (decoder mirrors them). Default depends on "
                  "the dataset: svhn/cifar10 128,256,512 (LVAT Table 2), mnist/fashion_mnist/"
                  "digits 32,64,128.")
flags.DEFINE_bool("aug_trans", True, "Pad-2 random translation (LVAT VAE.distort).")
flags.DEFINE_integer("seed", 1, "Seed.")
flags.DEFINE_integer("max_iter_per_epoch", 0, "Cap on steps per epoch (0 = full pass).")
flags.DEFINE_bool("tfds_download", True, "Allow tensorflow-datasets downloads.")
FLAGS = flags.FLAGS


def main():
    from lvat_tf.config import ConfigError
    from lvat_tf.data import registry
    from lvat_tf.generative import model_dir
    from lvat_tf.generative.train_vae import VAEConfig, train_vae

    _common.require(FLAGS, log_dir="the directory to save the VAE in")
    defaults = registry.get_spec(FLAGS.dataset).defaults  # one-line error if unknown
    epochs = FLAGS.num_epochs or defaults.vae_epochs
    try:
        widths = tuple(int(w) for w in FLAGS.widths) if FLAGS.widths else \
            defaults.vae_widths
    except ValueError:
        raise ConfigError("widths", f"expected comma-separated integers, got "
                          f"{','.join(FLAGS.widths)!r}") from None
    cfg = VAEConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model_dir=FLAGS.log_dir,
                    num_epochs=epochs, batch_size=FLAGS.batch_size,
                    learning_rate=FLAGS.learning_rate, latent_dim=FLAGS.latent_dim, widths=widths,
                    aug_trans=FLAGS.aug_trans, seed=FLAGS.seed,
                    max_iter_per_epoch=FLAGS.max_iter_per_epoch,
                    tfds_download=FLAGS.tfds_download)
    _, meta = train_vae(cfg)
    print(model_dir.summary_line(FLAGS.log_dir, meta))


if __name__ == "__main__":
    app.run(_common.entry_point(main))
