"""Names the reference experiment accepts, kept free of torch so the CLI loads fast."""

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
