"""The gateway: what a job reaches outside its container, all through the daemon (its model,
and allowed egress)."""
