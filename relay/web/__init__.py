"""The HTTP face beside the ingest: the dashboard, the connection check's endpoints, JSON
errors and the wrong-credential throttle."""
