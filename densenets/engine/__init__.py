"""Training, checkpoints, inference."""
