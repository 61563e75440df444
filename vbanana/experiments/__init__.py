"""Experiments: scripts that run several trainings and evaluations and write a report (`recipe`)."""
