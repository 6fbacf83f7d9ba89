"""Stage 4, evaluation: CLIP and CLIP-ICM predictions per target, and their summaries."""
