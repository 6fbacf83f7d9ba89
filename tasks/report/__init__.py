"""Stage 5, reports: the run report and its plots, leaderboards, reproductions."""
