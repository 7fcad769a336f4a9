"""Pure metric, calibration and bootstrap functions on arrays, below models and evaluation; the worst of several held-out renderers."""
