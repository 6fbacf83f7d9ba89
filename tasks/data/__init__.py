"""Stage 1, the data: datasets discovered and split, interventions drawn, prompts and class names."""
