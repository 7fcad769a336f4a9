"""Synthetic spine MRI studies: anatomy, findings, acquisition, written as the data contract says."""
