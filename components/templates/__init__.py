"""Step 2, templates: expand records into (instruction, target) pairs from a template registry."""
