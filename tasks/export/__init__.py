"""Stage 6, hand it on: a fitted projection folded into its open_clip model, as a folder open_clip loads as it is."""
