"""`mlops serve`: the registry's models behind HTTP. `app` answers requests in a worker, `batching` stacks
concurrent requests into one model call, `protocols` reads and writes the bodies, `process` runs the supervisor
and its forked workers."""
