"""The agents watcherd runs besides Codex: one module of description data each."""
