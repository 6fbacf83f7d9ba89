"""Stage 2, embedding: images (original and intervened) and prompts through open_clip, into Parquet shards."""
