"""Where a run's data lives: storage on any fsspec URL, the embedding catalog, run history, freed memory."""
