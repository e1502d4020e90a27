"""The training loop shared by every paper: seeding, schedules, checkpoints, resume, logging."""
