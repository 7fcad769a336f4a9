"""Evaluations of predictions: metrics.json and plots, real-anatomy, saliency and scan-mode checks."""
