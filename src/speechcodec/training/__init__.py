"""Training: the parts that need no torch (its configuration) live here; the trainer itself is
``speechcodec.train``."""
