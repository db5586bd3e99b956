"""The performance model: roofline and operator-level estimates, calibration, simulation, and the
estimate-based features the policy decides on."""
