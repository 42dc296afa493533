"""Relevance auditor: audits image classifiers for shortcut strategies with per-channel relevance."""

__version__ = "0.1.0"
