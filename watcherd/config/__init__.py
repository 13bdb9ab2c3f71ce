"""The configuration: one frozen Config, loaded once (file, environment, flags) and passed down."""

from __future__ import annotations

from watcherd.config.load import DEFAULT_IMAGE, MIN_CPUS, Config, ConfigError, load_config

__all__ = ["DEFAULT_IMAGE", "MIN_CPUS", "Config", "ConfigError", "load_config"]
