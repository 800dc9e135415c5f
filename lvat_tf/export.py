"""Export a trained classifier as a TF-Serving SavedModel.

Layout: ``EXPORT_DIR/<version>/`` (saved_model.pb + variables/), TF-Serving's
model-base-path convention. Two signatures:

* ``serving_default``: ``images`` uint8 (N, H, W, C) raw pixels ->
  ``probabilities`` float32 (N, K) and ``classes`` int64 (N,). The run's
  preprocessing is inside the graph (padding, scaling, CIFAR-10 ZCA with the
  fitted mean/matrix saved as variables), BN in inference mode, no dropout.
* ``logits``: ``inputs`` float32 (N, H', W', C) already in the model's input
  space (after scaling/ZCA/padding) -> ``logits`` float32 (N, K) — the
  signature to compare an exported upstream checkpoint with upstream's own
  inference logits.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from lvat_tf.data.preprocessing import Preprocessor


class InGraphPreprocessing(keras.layers.Layer):
    """uint8 (N, H, W, C) -> float32 model input, the same maths as :class:`Preprocessor`."""

    def __init__(self, prep: Preprocessor, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.scaling, self.pad_to = prep.scaling, prep.pad_to
        self.image_shape = tuple(int(v) for v in image_shape)
        self.uses_zca = prep.uses_zca
        if self.uses_zca:
            self.zca_mean = self.add_weight(shape=prep.zca_mean.shape, trainable=False,
                                            initializer=keras.initializers.Constant(
                                                prep.zca_mean), name="zca_mean")
            self.zca_w = self.add_weight(shape=prep.zca_w.shape, trainable=False,
                                         initializer=keras.initializers.Constant(prep.zca_w),
                                         name="zca_w")

    def call(self, images):
        x = tf.cast(images, tf.float32)
        if self.pad_to:
            h, w = self.image_shape[:2]
            top, left = (self.pad_to - h) // 2, (self.pad_to - w) // 2
            x = tf.pad(x, [[0, 0], [top, self.pad_to - h - top],
                           [left, self.pad_to - w - left], [0, 0]])
        x = x / 255.0 if self.scaling == "unit" else (x - 127.5) / 255.0
        if self.uses_zca:
            shape = tf.shape(x)
            flat = tf.reshape(x, [shape[0], -1]) - self.zca_mean
            x = tf.reshape(tf.matmul(flat, self.zca_w, transpose_b=True), shape)
        return x


def export_classifier(classifier, prep: Preprocessor, raw_shape, export_dir: str,
                      version: int = 1) -> str:
    """Writes the SavedModel to ``export_dir/<version>`` (atomically) and returns that path.

    Args:
      classifier: a built :class:`lvat_tf.models.classifiers.Classifier`.
      prep: the run's preprocessing.
      raw_shape: (H, W, C) of the raw uint8 images the server receives.
      export_dir: TF-Serving's model base path.
      version: the numbered sub-directory (a positive integer).
    """
    raw_shape = tuple(int(v) for v in raw_shape)
    pre = InGraphPreprocessing(prep, raw_shape, name="preprocessing")
    model_shape = tuple(pre(tf.zeros((1,) + raw_shape, tf.uint8)).shape[1:])

    def check(t, shape, name):
        # The SavedModel signature carries the shape, but a concrete-function
        # call and TF-Serving do not enforce it: fail with a clear message.
        return tf.debugging.assert_equal(
            tf.shape(t)[1:], tf.constant(shape, tf.int32),
            message=f"{name}: expected shape (N, {', '.join(map(str, shape))})")

    def serve(images):
        with tf.control_dependencies([check(images, raw_shape, "images")]):
            images = tf.identity(images)
        logits = classifier(pre(images), bn_mode="moving")
        return {"probabilities": tf.nn.softmax(logits),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int64)}

    def logits_fn(inputs):
        with tf.control_dependencies([check(inputs, model_shape, "inputs")]):
            inputs = tf.identity(inputs)
        return {"logits": classifier(inputs, bn_mode="moving")}

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.track(pre)
    archive.add_endpoint("serving_default", serve, input_signature=[
        tf.TensorSpec((None,) + raw_shape, tf.uint8, name="images")])
    archive.add_endpoint("logits", logits_fn, input_signature=[
        tf.TensorSpec((None,) + model_shape, tf.float32, name="inputs")])
    final = os.path.join(export_dir, str(int(version)))
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        import shutil
        shutil.rmtree(tmp)
    os.makedirs(export_dir, exist_ok=True)
    archive.write_out(tmp, verbose=False)
    os.replace(tmp, final)
    return final


def predict_numpy(classifier, prep: Preprocessor, images: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities on raw images (the reference for export tests)."""
    return tf.nn.softmax(classifier(tf.constant(prep(images)), bn_mode="moving")).numpy()
