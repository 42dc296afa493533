"""Pure checks: arrays and explicit parameters in, typed results out (no files, executors or config objects)."""
