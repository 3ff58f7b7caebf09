"""Step 3, shards: tokenize examples with the base model's tokenizer into per-stream Parquet shards + manifest."""
