"""Reproducible performance benchmarks; `python -m benchmarks.run` prints their JSON figures."""
