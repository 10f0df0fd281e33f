from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from mlops_cli.cli._common import RuntimeOpt, StrictOpt, columns, load_options, registry, store_url


def run(
    ref: Annotated[str, typer.Argument(help="The model, usually an alias: NAME@ALIAS follows it.", metavar="REF")],
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes, forked after the model loads.")] = 1,
    challenger: Annotated[
        str | None, typer.Option(metavar="REF", help="A second model for --challenger-share of the split keys.")
    ] = None,
    challenger_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
    split_key: Annotated[
        list[str] | None,
        typer.Option("--split-key", metavar="COL[,COL...]", help="Row column(s) whose hash picks the model."),
    ] = None,
    shadow: Annotated[
        str | None, typer.Option(metavar="REF", help="Also score every row with this model, log it, never return it.")
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Write one Parquet row per prediction under DIR.")
    ] = None,
    log_rotate_s: Annotated[float, typer.Option(min=1.0, help="Publish a log file at least this often.")] = 60.0,
    max_batch_rows: Annotated[int, typer.Option(min=1, help="Rows per model call (micro-batch).")] = 256,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="Wait this long for more requests before a call (0: never wait).")
    ] = 0.0,
    max_request_rows: Annotated[int, typer.Option(min=1, help="Rows per request (413 above).")] = 10_000,
    max_queued_rows: Annotated[int, typer.Option(min=1, help="Rows waiting per worker (429 above).")] = 10_000,
    timeout_s: Annotated[float, typer.Option(min=0.001, help="Per-request deadline (504 after it).")] = 10.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body (413 above).")] = 10.0,
    token_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Require 'Authorization: Bearer <the file's text>'.")
    ] = None,
    on_invalid: Annotated[
        Literal["fail", "null"],
        typer.Option(help="Rows that break the input contract: fail the request (422), or answer null and why."),
    ] = "fail",
    poll_s: Annotated[float, typer.Option(min=0.05, help="How often the alias is re-read.")] = 0.5,
    shutdown_delay_s: Annotated[
        float, typer.Option(min=0.0, help="On SIGTERM, answer as not ready this long before closing the socket.")
    ] = 0.0,
    drain_s: Annotated[float, typer.Option(min=0.0, help="On SIGTERM, wait this long for requests in flight.")] = 30.0,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            metavar="URL",
            callback=store_url,
            help="Look up missing features by entity id in this Redis (redis://HOST:PORT/DB).",
        ),
    ] = None,
    feature_view: Annotated[
        str | None, typer.Option(metavar="NAME", help="The feature view to look up (mlops features materialize).")
    ] = None,
    entity_column: Annotated[
        str | None, typer.Option(metavar="COL", help="The request column holding the entity id.")
    ] = None,
    on_missing_feature: Annotated[
        Literal["reject", "fill"],
        typer.Option(
            help="An unknown entity or a feature the view lacks: reject the request (422), or fill from the version's "
            "reference profile and flag the row."
        ),
    ] = "reject",
    feature_cache_s: Annotated[
        float, typer.Option(min=0.0, help="Keep looked-up entities in memory this long (0: no cache).")
    ] = 5.0,
    feature_cache_entries: Annotated[int, typer.Option(min=0, help="Entities kept in memory per worker.")] = 100_000,
    feature_timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Redis connect and read timeout (503 after it).")
    ] = 0.25,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
) -> None:
    """Serve a registered model over HTTP: mlops, MLflow and Open Inference (V2) protocols, Prometheus metrics.

    NAME@ALIAS follows the alias: when it moves, each worker loads, verifies and warms the new version, then
    switches, with no failed request; SIGHUP re-checks at once. SIGTERM drains and exits 0.
    """
    key = columns(split_key)
    if challenger is None and (key or challenger_share != 0.1):
        raise typer.BadParameter("needs --challenger", param_hint="--split-key/--challenger-share")
    if challenger is not None and not key:
        raise typer.BadParameter("a challenger needs --split-key COL", param_hint="--split-key")
    if challenger is not None and not 0 < challenger_share < 1:
        raise typer.BadParameter("use a share strictly between 0 and 1", param_hint="--challenger-share")

    online = [features, feature_view, entity_column]
    if any(v is not None for v in online) and not all(v is not None for v in online):
        raise typer.BadParameter("give all three, or none", param_hint="--features/--feature-view/--entity-column")

    from mlops_cli.errors import EmptyInput, InputError, MissingFile

    try:
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise InputError(f"mlops serve needs {exc.name}", "install the extra: pip install 'mlops-cli[serve]'") from exc
    token = None
    if token_file is not None:
        if not token_file.is_file():
            raise MissingFile(f"{token_file}: no such file", "check --token-file")
        token = token_file.read_text().strip()
        if not token:
            raise EmptyInput(f"{token_file} is empty", "put the bearer token in it")
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    from mlops_cli.serve import process
    from mlops_cli.serve.app import ServeOptions

    feature_options = None
    if features is not None:
        from mlops_cli.serve.features import FeatureOptions

        feature_options = FeatureOptions(
            url=features,
            view=feature_view,  # type: ignore[arg-type]
            entity_column=entity_column,  # type: ignore[arg-type]
            on_missing=on_missing_feature,
            cache_s=feature_cache_s,
            cache_entries=feature_cache_entries,
            timeout_s=feature_timeout_s,
        )

    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        challenger=challenger,
        challenger_share=challenger_share,
        split_key=key,
        shadow=shadow,
        log_dir=log_dir,
        log_rotate_s=log_rotate_s,
        max_batch_rows=max_batch_rows,
        max_wait_ms=max_wait_ms,
        max_queued_rows=max_queued_rows,
        max_request_rows=max_request_rows,
        timeout_s=timeout_s,
        max_body_mb=max_body_mb,
        token=token,
        on_invalid=on_invalid,
        poll_s=poll_s,
        shutdown_delay_s=shutdown_delay_s,
        drain_s=drain_s,
        load=load_options(strict, runtime),
        features=feature_options,
    )
    models = process.load(registry(), ref, options)
    sock = process.listen(host, port)
    bound = sock.getsockname()[1]

    def announce() -> None:
        champion = models.champion.current
        assert champion is not None
        print(
            f"mlops serve: {models.champion.ref} (version {champion.version}, {champion.model.runtime}) on "
            f"http://{host}:{bound} with {workers} worker{'s' if workers > 1 else ''}",
            file=sys.stderr,
            flush=True,
        )

    code = process.serve(models, options, sock, announce)
    if code:
        raise typer.Exit(code)
