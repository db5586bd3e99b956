"""Measurement: the short job probe, the NVML/RAPL energy meter, step timing, the profiler and the workload zoo."""
