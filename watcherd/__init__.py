"""watcherd: run coding agents headless from a folder of YAML job files."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"
