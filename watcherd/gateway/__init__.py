"""The gateway: all a job reaches outside its container goes through the daemon, here: its
model (the key-holding proxy) and, where the operator allows it, named egress."""
