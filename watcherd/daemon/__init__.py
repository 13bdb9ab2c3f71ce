"""The daemon: a Server with its lifecycle (start-up, main loop, shutdown), the scheduler of
slots, signals, reload and systemd notification."""
