"""Names that options accept, at the bottom of the package so that every layer (and the CLI's help) can list them."""

from __future__ import annotations

#: Optimizers by CLI name: the torch.optim class name, and whether it takes ``momentum``.
OPTIMIZERS: dict[str, tuple[str, bool]] = {
    "sgd": ("SGD", True),
    "adam": ("Adam", False),
    "adamw": ("AdamW", False),
    "rmsprop": ("RMSprop", True),
    "adagrad": ("Adagrad", False),
    "adadelta": ("Adadelta", False),
    "adamax": ("Adamax", False),
    "nadam": ("NAdam", False),
    "radam": ("RAdam", False),
}

#: Data sets: MNIST when it loads (auto), or explicitly MNIST or scikit-learn's digits.
DATASETS = ("auto", "mnist", "digits")

#: Sample formats of audio files: 32-bit float, 16-bit and 24-bit integer PCM.
SAMPLE_FORMATS = ("float", "pcm16", "pcm24")
