"""Object storage: the S3 client, stage outputs, deliverables, the embedded server."""
