"""The clip-icm command line: a thin layer over the flows (`clip_icm.cli`)."""
