"""Inference package."""
