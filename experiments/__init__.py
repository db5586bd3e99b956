"""Studies of the placement service: top-to-bottom scripts (``python -m experiments.NAME``), the
evaluation and calibration reports, and their shared harness (arguments, Ray fan-out, provenance)."""
