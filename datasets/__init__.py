"""Data modules, degradation pipelines and synthetic data for training and tests."""

__restore_package__ = True
