"""One stage inside a worker process: runner, the sink it reports to, its leases."""
