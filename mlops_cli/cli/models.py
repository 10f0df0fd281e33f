from __future__ import annotations

from typing import Annotated

import typer

from mlops_cli.cli._common import JsonOpt, MlopsCommand, OutputOpt, OverwriteOpt, QuietOpt, emit, registry
from mlops_cli.report import Report

app = typer.Typer(
    help="List, inspect, promote and roll back registered models.", no_args_is_help=True, rich_markup_mode=None
)

RefArg = Annotated[str, typer.Argument(help="NAME (latest), NAME:VERSION or NAME@ALIAS.", metavar="REF")]
NameArg = Annotated[str, typer.Argument(help="Model name.", metavar="NAME")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why; recorded in the event log.")]


@app.command("list", cls=MlopsCommand)
def list_(
    name: Annotated[str | None, typer.Argument(help="List this model's versions.", metavar="[NAME]")] = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """List registered models, or one model's versions."""
    from mlops_cli.errors import RegistryError

    reg = registry()
    messages = []
    if name is None:
        models = []
        for model_name in reg.names():
            try:
                versions, aliases = reg.versions(model_name), reg.aliases(model_name)
            except RegistryError as exc:  # one damaged model must not hide the others
                messages.append(f"{model_name}: {exc.one_line()}")
                models.append({"name": model_name, "error": exc.one_line()})
                continue
            models.append(
                {
                    "name": model_name,
                    "versions": len(versions),
                    "latest": versions[-1].version if versions else None,
                    "updated": versions[-1].manifest["created_at"] if versions else None,
                    "aliases": aliases,
                }
            )
        results = {"registry": str(reg.root), "models": models}
    else:
        aliases = reg.aliases(name)
        results = {
            "name": name,
            "aliases": aliases,
            "versions": [
                {
                    "version": v.version,
                    "created_at": v.manifest["created_at"],
                    "sha256": v.summary()["sha256"],
                    "estimator_class": v.manifest["estimator_class"],
                    "description": v.manifest.get("description"),
                    "metrics": v.manifest.get("metrics"),
                    "aliases": sorted(a for a, t in aliases.items() if t == v.version),
                }
                for v in reg.versions(name)
            ],
        }
    emit(Report("models list", results=results, messages=messages), "render_models_list")


@app.command("show", cls=MlopsCommand)
def show(
    ref: RefArg,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Show a version's manifest, aliases and metrics, after verifying its files' hashes (exit 4 if altered)."""
    reg = registry()
    version = reg.resolve(ref)
    reg.verify(version)
    aliases = sorted(a for a, v in reg.aliases(version.name).items() if v == version.version)
    report = Report(
        "models show",
        results={"manifest": version.manifest, "aliases": aliases, "verified": True, "path": str(version.path)},
        model=version.summary(),
    )
    emit(report, "render_manifest")


@app.command("promote", cls=MlopsCommand)
def promote(
    ref: RefArg,
    alias: Annotated[str, typer.Argument(help="Alias to set or move, e.g. production.")],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Point ALIAS at the version REF names (after verifying it)."""
    version, previous = registry().promote(ref, alias, reason=reason)
    report = Report(
        "models promote",
        results={"name": version.name, "alias": alias, "from": previous, "to": version.version},
        model=version.summary(),
    )
    emit(report, "render_alias_move")


@app.command("rollback", cls=MlopsCommand)
def rollback(
    name: NameArg,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "production",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Move ALIAS back to the version it pointed at before its last move (from the event log)."""
    reg = registry()
    moved_from, moved_to = reg.rollback(name, alias, reason=reason)
    report = Report(
        "models rollback",
        results={"name": name, "alias": alias, "from": moved_from, "to": moved_to},
        model=reg.resolve(f"{name}:{moved_to}").summary(),
    )
    emit(report, "render_alias_move")


@app.command("history", cls=MlopsCommand)
def history(
    name: NameArg,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """The model's append-only event log: registrations, alias moves, rollbacks, with time, user and reason."""
    emit(Report("models history", results={"name": name, "events": registry().events(name)}), "render_history")
