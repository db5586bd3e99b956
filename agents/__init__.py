"""Baselines, the 2-layer DNN, PPO warm-started from it, and their evaluation."""
