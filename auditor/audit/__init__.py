"""One audit from start to end: the passes, the stages that call the checks, the life cycle, the report and summary."""
