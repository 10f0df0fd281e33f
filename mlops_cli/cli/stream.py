from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mlops_cli.cli._common import (
    JsonOpt,
    OutputOpt,
    PromFileOpt,
    QuietOpt,
    RuntimeOpt,
    StrictOpt,
    columns,
    emit,
    load_options,
    pairs,
    registry,
)


def run(
    ref: Annotated[str, typer.Argument(help="The model, usually an alias: NAME@ALIAS follows it.", metavar="REF")],
    brokers: Annotated[str, typer.Option(metavar="HOST:PORT[,...]", help="Kafka bootstrap servers.")],
    input_topic: Annotated[str, typer.Option(metavar="TOPIC", help="Feature messages: one JSON object each.")],
    output_topic: Annotated[str, typer.Option(metavar="TOPIC", help="Where the answers go.")],
    group: Annotated[
        str | None, typer.Option(metavar="ID", help="Consumer group (default: mlops-stream-<model name>).")
    ] = None,
    dead_letter_topic: Annotated[
        str | None,
        typer.Option(
            metavar="TOPIC",
            help="Invalid rows and undecodable messages go here, as they came, with the reason in headers "
            "(default: to the output topic with a null prediction and the reason).",
        ),
    ] = None,
    key_column: Annotated[
        str | None, typer.Option(metavar="COL", help="The message field holding the row's id (echoed as 'id').")
    ] = None,
    challenger: Annotated[
        str | None, typer.Option(metavar="REF", help="A second model for --challenger-share of the split keys.")
    ] = None,
    challenger_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
    split_key: Annotated[
        list[str] | None,
        typer.Option("--split-key", metavar="COL[,COL...]", help="Message field(s) whose hash picks the model."),
    ] = None,
    max_batch_rows: Annotated[int, typer.Option(min=1, help="Messages per batch (one model call, one commit).")] = 500,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="Wait this long for a fuller batch (0: take what is there).")
    ] = 0.0,
    log_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Write one Parquet row per prediction under DIR.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve /metrics, /livez, /readyz on this port.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the metrics port binds.")] = "127.0.0.1",
    prom_file: PromFileOpt = None,
    start_from: Annotated[
        Literal["earliest", "latest"],
        typer.Option("--from", help="Where a group without committed offsets starts."),
    ] = "earliest",
    max_messages: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
    idle_exit_s: Annotated[float | None, typer.Option(min=0.0, help="Stop when no message came for this long.")] = None,
    poll_s: Annotated[float, typer.Option(min=0.05, help="How often the alias is re-read.")] = 0.5,
    timeout_s: Annotated[
        float,
        typer.Option(min=0.1, help="Broker deadline: to connect at start, and for a batch's answers to be acked."),
    ] = 30.0,
    session_timeout_ms: Annotated[
        int, typer.Option(min=1000, help="Consumer-group session timeout (a dead member's partitions move after it).")
    ] = 10_000,
    kafka_option: Annotated[
        list[str] | None,
        typer.Option("--kafka-option", metavar="KEY=VALUE", help="More librdkafka settings (security, ...)."),
    ] = None,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a Kafka topic continuously: each JSON message in, one answer out, offsets committed only after the
    answers are acknowledged (at least once; nothing lost on a crash).

    NAME@ALIAS follows the alias: a new version is loaded, verified and warmed up, then used from the next batch.
    SIGHUP re-checks the alias now. SIGTERM or Ctrl-C finish the batch, commit, leave the group and exit 0. An
    unreachable broker exits 3.
    """
    key = columns(split_key)
    if challenger is None and (key or challenger_share != 0.1):
        raise typer.BadParameter("needs --challenger", param_hint="--split-key/--challenger-share")
    if challenger is not None and not key:
        raise typer.BadParameter("a challenger needs --split-key COL", param_hint="--split-key")
    if challenger is not None and not 0 < challenger_share < 1:
        raise typer.BadParameter("use a share strictly between 0 and 1", param_hint="--challenger-share")
    extra = pairs(kafka_option, "--kafka-option")

    from mlops_cli.errors import InputError
    from mlops_cli.interrupts import hangup_rechecks

    try:
        import confluent_kafka  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise InputError(f"mlops stream needs {exc.name}", "install the extra: pip install 'mlops-cli[kafka]'") from exc
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    from mlops_cli.refs import parse_ref
    from mlops_cli.report import Report
    from mlops_cli.stream.runner import Stream, StreamOptions

    options = StreamOptions(
        brokers=brokers,
        input_topic=input_topic,
        output_topic=output_topic,
        group=group or f"mlops-stream-{parse_ref(ref).name}",
        dead_letter_topic=dead_letter_topic,
        key_column=key_column,
        challenger=challenger,
        challenger_share=challenger_share,
        split_key=key,
        max_batch_rows=max_batch_rows,
        max_wait_ms=max_wait_ms,
        log_dir=log_dir,
        metrics_host=host,
        metrics_port=metrics_port,
        start_from=start_from,
        max_messages=max_messages,
        idle_exit_s=idle_exit_s,
        poll_s=poll_s,
        timeout_s=timeout_s,
        session_timeout_ms=session_timeout_ms,
        kafka=extra,
        load=load_options(strict, runtime),
    )

    def announce(stream: Any) -> None:
        if quiet:
            return
        current = stream.champion.current
        where = f", metrics on http://{host}:{stream.port}/metrics" if stream.port is not None else ""
        print(
            f"mlops stream: {stream.champion.ref} (version {current.version}, {current.model.runtime}) from "
            f"{input_topic} to {output_topic}, group {options.group}, brokers {brokers}{where}",
            file=sys.stderr,
            flush=True,
        )

    stream = Stream(registry(), ref, options)
    # From the start, not only once consuming: a SIGHUP while loading or connecting re-checks too, never stops.
    with hangup_rechecks(stream.recheck):
        stream.load()
        counts = stream.run(announce)
    champion = stream.champion.current
    assert champion is not None
    results = {
        "brokers": brokers,
        "input_topic": input_topic,
        "output_topic": output_topic,
        "dead_letter_topic": dead_letter_topic,
        "group": options.group,
        "messages_in": counts.messages_in,
        "messages_out": counts.messages_out,
        "dead_lettered": counts.dead_lettered,
        "unproducible": counts.unproducible,
        "batches": counts.batches,
        "commits_failed": counts.commits_failed,
        "switches": counts.switches,
        "stopped_by": stream.stopped_by,
        "models": [f.details() for f in stream.models()],
    }
    model = champion.model.version.summary() if champion.model.version is not None else None
    emit(Report("stream", results=results, model=model), render="render_stream")
