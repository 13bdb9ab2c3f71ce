"""Jobs that start themselves: the operator's schedules (a due slot becomes one job file,
exactly once, however many daemons share the root) and signed inbound hooks (a verified
delivery becomes one job file, its payload quoted in the prompt and nowhere else)."""
