"""Relays: a Swarm job's model and egress sockets served on whichever node runs its task,
over one mutually authenticated TLS channel to the daemon's gateway."""
