"""Classifier models and their upstream-faithful layers."""
