"""Code shared by every step: config, storage, record schemas, tracking, model loading."""
