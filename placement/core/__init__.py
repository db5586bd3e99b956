"""The domain: typed records of jobs, hardware targets, outcomes, thresholds, decisions and traces."""
