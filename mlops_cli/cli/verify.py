from __future__ import annotations

from typing import Annotated

import typer

from mlops_cli.cli._common import (
    AlertFormatOpt,
    AlertTimeoutOpt,
    AlertWebhookOpt,
    JsonOpt,
    OutputOpt,
    OverwriteOpt,
    PromFileOpt,
    QuietOpt,
    emit,
    registry,
)


def run(
    name: Annotated[str | None, typer.Argument(help="Verify only this model.", metavar="[NAME]")] = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    prom_file: PromFileOpt = None,
    alert_webhook: AlertWebhookOpt = None,
    alert_format: AlertFormatOpt = "slack",
    alert_timeout: AlertTimeoutOpt = 30.0,
) -> None:
    """Check the registry, or one model: every file against its manifest, every manifest against its registration
    event, the event log's hash chain and the aliases. Lists every problem; exit 4 if there is any."""
    from mlops_cli.verify import verify

    emit(verify(registry(), name), "render_verify")
