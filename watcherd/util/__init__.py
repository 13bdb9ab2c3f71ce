"""Small helpers every layer uses: safe file I/O, strict YAML, units, env names, retry policy."""
