"""Step 5, evaluate: candidate, base and current champion on the same test examples, scored with ROUGE."""
