"""`mlops stream`: the Kafka edge, as `mlops_cli.serve` is the HTTP one. `runner` consumes, scores, produces and
commits (at least once); `messages` turns messages into rows and answers; `endpoint` holds the metrics and serves
/metrics, /livez and /readyz."""
