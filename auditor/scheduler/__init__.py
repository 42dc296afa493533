"""`auditor schedule`: scheduled audits with APScheduler, their schedule file, runs and health."""
