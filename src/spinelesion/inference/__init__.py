"""Prediction on studies: ROIs given or found by scanning, saliency, exports, and every run output."""
