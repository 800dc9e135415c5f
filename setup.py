"""lvat_tf: VAT, LVAT and MAT consistency regularisation on TensorFlow 2 / Keras 3.

The one place dependencies are declared. TensorFlow, Keras, TFP and tf-keras
are pinned to the versions checked together (TFP 0.25 needs tf-keras for its
bijectors; see README "Environment").
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorflow-probability[tf]==0.25.0",
    "tf-keras==2.21.0",
    "tensorboard>=2.20,<2.22",
    "tensorflow-datasets>=4.9,<5",
    "importlib_resources",  # tensorflow-datasets 4.9.10 imports it without declaring it
    "absl-py>=2.1",
    "numpy>=1.26",
    "scipy>=1.11",          # SVHN .mat files
    "scikit-learn>=1.3",    # the embedded digits dataset
    "matplotlib>=3.8",      # robustness curves, embedding plots (Agg backend, no display)
]

setup(
    name="lvat_tf",
    version="0.1.0",
    description="Virtual / latent-space / manifold adversarial training (VAT, LVAT, MAT) "
                "for TensorFlow 2 and Keras 3",
    packages=find_packages(include=["lvat_tf", "lvat_tf.*", "flags", "flags.*"]),
    package_data={"lvat_tf": ["resources/*.json"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # tensorflow-serving-api: the export tests build PredictRequests for the signatures.
        # pytest-xdist: .ci/run spreads the test files over two worker processes.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "tensorflow-serving-api==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
    },
)
