"""Stage 3, the fit: moments of the sources, (lambda, k) chosen by a selection rule, the projection stored and diagnosed."""
