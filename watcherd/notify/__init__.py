"""Telling the world a job ended: signed webhooks and commands, by the config's target names."""
