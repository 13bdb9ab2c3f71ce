"""The agents watcherd runs, one module each: the agent's image, home and environment, and
how to read its event stream."""
