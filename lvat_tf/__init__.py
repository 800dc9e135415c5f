"""lvat_tf: VAT, LVAT and MAT consistency regularisation on TensorFlow 2 / Keras 3.

Importing the package selects the TensorFlow backend for Keras before Keras is
imported anywhere else, because every model and train step here is TF code.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
