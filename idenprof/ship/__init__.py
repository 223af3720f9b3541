"""Shipping a model: exports, packaging the shipped model, outlier sources."""
