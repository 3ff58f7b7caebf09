"""Online serving of a registered model: dynamic batching, alias following (mixtune serve, KServe)."""
