"""Problem sources, answer checking, dataset builders, trainers and campaigns (to come)."""
