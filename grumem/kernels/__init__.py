"""Compute ops. Each op has a slow, obvious torch reference in reference.py (the CPU backend and the test oracle)."""
