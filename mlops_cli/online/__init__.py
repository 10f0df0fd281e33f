"""What the long-running services (`mlops serve`, `mlops stream`) share: models that follow their registry alias
(`following`), the champion/challenger routing of score-batch applied to rows in memory (`routing`), the
prediction log (`predlog`) and the Prometheus metrics (`metrics`). All of it predicts through the one runtime."""
