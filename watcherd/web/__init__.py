"""``watcherd serve``: the HTTP API, the dashboard and inbound hooks over one root; it submits,
reads and cancels through watcherd.client and never runs a job."""
