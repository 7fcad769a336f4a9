"""Benchmark pieces: timing, machine description, speed and accuracy measurements, report."""
