"""From a manifest to batches: validation, ROI crops, normalisation, augmentation, caching."""
