"""What a job tells the outside world: Prometheus textfiles (`promfile`), alerts with their deduplication state
(`alerts`) and their delivery to a webhook (`webhook`); `job` ties them to one run of a command.

Standard library only: a cron job's metrics and alerts must not depend on an optional extra.
"""
