"""Batch inference: summarize unlabeled chat logs with a registered model (default: the champion)."""
