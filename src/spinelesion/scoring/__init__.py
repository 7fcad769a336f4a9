"""Pure metric, calibration and bootstrap functions on arrays, below models and evaluation."""
