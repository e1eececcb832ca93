"""Framework integrations: thin callbacks over :class:`sonify.Sonifier`.

Each lives in its own module and imports its framework only when that module
is imported, so sonify works without them:

* :mod:`sonify.integrations.lightning`: ``SonifyCallback`` for PyTorch Lightning
  (``pip install 'sonify[lightning]'``);
* :mod:`sonify.integrations.transformers`: ``SonifyTrainerCallback`` for the
  Hugging Face ``Trainer`` (``pip install 'sonify[transformers]'``).

Both take the same options as :class:`~sonify.Sonifier` (``out``, ``layers``,
``params``, ``group``, ``sound``, ``mapping``, ``live``, ``output_device``, ``pace``,
...), and record, write and play on the main process (rank 0) only.
"""
