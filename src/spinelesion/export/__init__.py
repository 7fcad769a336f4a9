"""Exports of a trained model folder to other ecosystems (a MONAI bundle)."""
