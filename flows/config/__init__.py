"""The run's configuration (`RunConfig`: every option, typed, one source for the CLI, the deployment form and
the reports) and the checks it passes before anything runs (`preflight`)."""
