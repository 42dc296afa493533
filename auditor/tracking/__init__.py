"""MLflow: resolving models and samples, logging audits to runs."""
