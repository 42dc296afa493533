"""The `auditor` command line."""
