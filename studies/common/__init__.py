"""Plumbing shared by the studies: datasets, training loops, checkpoints."""
