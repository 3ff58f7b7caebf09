"""Step 1, ingest: read chat logs and DialogSum-style files, validate, quarantine, split, write Parquet."""
