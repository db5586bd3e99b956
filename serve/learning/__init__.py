"""The online learner: rewards formed from outcomes, quarantine of poisoned feedback, the
off-policy gate and the per-architecture offsets."""
