"""tsm_keras: the Temporal Shift Module (TSM) in Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="tsm_keras",
    version="0.1.0",
    description=(
        "Temporal Shift Module video recognition in Keras 3: training, "
        "PyTorch checkpoint import and quantized online LiteRT export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tsm_keras", "tsm_keras.*"]),
    package_data={"tsm_keras": ["data/label_maps/*.txt", "layers/kernels/*.cc"]},
    entry_points={
        "console_scripts": [
            "tsm-train=tsm_keras.cli.train:main",
            "tsm-test=tsm_keras.cli.test:main",
            "tsm-import=tsm_keras.cli.import_torch:main",
            "tsm-export=tsm_keras.cli.export:main",
            "tsm-reparameterize=tsm_keras.cli.reparameterize:main",
            "tsm-predict=tsm_keras.cli.predict:main",
            "tsm-stream=tsm_keras.cli.stream:main",
            "tsm-android-bench=tsm_keras.cli.android_bench:main",
            "tsm-make-tfrecords=tsm_keras.cli.make_tfrecords:main",
            "tsm-make-videos=tsm_keras.cli.synthetic_videos:main",
        ],
    },
    install_requires=[
        "tensorflow==2.21.*",
        "keras==3.15.*",
        "numpy>=1.26",
        "pyyaml>=6",
        "rich>=13",
        "matplotlib>=3.8",
        "tensorboard>=2.21",
    ],
    extras_require={
        "video": ["av>=12"],
        "lite": ["ai-edge-litert>=2.0"],
        "torch": ["torch==2.13.0"],
        "dev": [
            "pytest>=8",
            "scikit-video>=1.1.11",
            "av>=12",
            "ai-edge-litert>=2.0",
            "jax>=0.4",  # runs the TemporalShift backend test on JAX too
        ],
    },
)
