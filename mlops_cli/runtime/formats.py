"""The files a version's model is stored in, and which of them a load reads.

    model.joblib   the artifact as registered. A pickle: loading it runs whatever code it carries.
    model.skops    optional (--formats skops): loaded with exactly the types reviewed at registration and recorded
                   in the (hash-sealed) manifest; a file that needs any other type is refused.
    model.onnx     optional (--formats onnx): a computation graph, run by onnxruntime; stored only when it agreed
                   with the artifact on the reference sample (and eval data) within the tolerance.

Every file is hash-verified before it is read. Storing returns bytes; `register` writes them into the version. `allow_pickle=False` (mlops --no-pickle, MLOPS_NO_PICKLE=1, or the
registry's settings.toml) refuses the pickle: a serving host can then run without ever unpickling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InputError, IntegrityError, ModelNotFound, UnreadableFile
from mlops_cli.runtime.onnx import ONNX_FILE, NotConvertible, OnnxPredictor, convert
from mlops_cli.runtime.predictor import short

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.registry import Version
    from mlops_cli.runtime.spec import ModelSpec

SKOPS_FILE = "model.skops"
FORMATS = ("onnx", "skops")
# skops types from these packages are trusted without asking: scikit-learn's own estimators and the arrays they hold.
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")


class MissingExtra(InputError):
    """An optional dependency the command needs is not installed."""


@dataclass(frozen=True)
class FormatOptions:
    formats: tuple[str, ...] = ()
    trust: tuple[str, ...] = ()  # skops types accepted beyond TRUSTED_PACKAGES
    label_agreement: float = 1.0  # share of sample rows whose ONNX label must equal scikit-learn's
    tolerance: float = 1e-5  # largest difference allowed in a probability (or a regressor's value, relative)


# --- loading ---------------------------------------------------------------------------------------------------


def has_onnx(version: Version) -> bool:
    return ONNX_FILE in version.manifest["files"]


def onnx_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def load_onnx(version: Version, spec: ModelSpec) -> OnnxPredictor:
    if not has_onnx(version):
        why = (version.manifest.get("formats") or {}).get("onnx", {}).get("reason")
        raise ModelNotFound(
            f"{version.ref} has no ONNX file{f' ({why})' if why else ''}",
            "register it with --formats onnx, or use --runtime sklearn",
        )
    if not onnx_installed():
        raise MissingExtra("onnxruntime is not installed", "pip install 'mlops-cli[onnx]', or use --runtime sklearn")
    from mlops_cli.runtime import threads

    return OnnxPredictor(
        version.file(ONNX_FILE).read_bytes(), spec, threads=1 if threads.pinned() else threads.default_threads()
    )


def load_estimator(version: Version, *, allow_pickle: bool) -> Any:
    """The scikit-learn estimator: from the pickle when allowed, else from the skops file with its recorded types."""
    from mlops_cli.registry import ARTIFACT
    from mlops_cli.runtime.artifacts import load_file

    if allow_pickle:
        return load_file(version.file(ARTIFACT))[0]
    if SKOPS_FILE not in version.manifest["files"]:
        raise IntegrityError(
            f"{version.ref} has only a pickle file, and pickle files are refused on this host (--no-pickle)",
            "register it with --formats skops or onnx, or allow pickle here",
        )
    trusted = version.manifest["formats"]["skops"]["trusted_types"]
    return load_skops(version.file(SKOPS_FILE), trusted)


def load_skops(source: Path | bytes, trusted: list[str]) -> Any:
    """A skops file (or its bytes), rebuilt with exactly the `trusted` types and no others."""
    try:
        import skops.io as sio
    except ImportError as exc:
        raise MissingExtra("skops is not installed", "pip install 'mlops-cli[onnx]'") from exc
    where = "the skops file" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            return sio.loads(source, trusted=list(trusted))
        return sio.load(source, trusted=list(trusted))
    except sio.exceptions.UntrustedTypesFoundException as exc:
        raise IntegrityError(
            f"{where} needs types its manifest does not trust ({short(exc)})",
            "it was not written by this registration: restore it from a backup",
        ) from exc
    except Exception as exc:  # skops raises whatever the objects it rebuilds raise
        raise UnreadableFile(f"{where}: cannot be loaded ({type(exc).__name__}: {short(exc)})") from exc


# --- storing, at registration ----------------------------------------------------------------------------------


def store(
    estimator: Any, spec: ModelSpec, checks: list[tuple[str, pd.DataFrame]], options: FormatOptions
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The extra formats asked for, each checked on `checks` (label, rows): the manifest's `formats` block, which
    says for each whether it is stored and, if not, why; and the files to store (name -> bytes). A format that
    cannot be stored never fails the register."""
    blocks: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name, make in (("skops", _skops), ("onnx", _onnx)):
        if name in options.formats:
            blocks[name], data = make(estimator, spec, checks, options)
            if data is not None:
                files[blocks[name]["file"]] = data
    return blocks, files


def not_stored(manifest: dict[str, Any]) -> list[str]:
    """One line per format asked for but not stored, and why."""
    return [f"no {n} file stored: {b['reason']}" for n, b in (manifest.get("formats") or {}).items() if not b["stored"]]


Stored = tuple[dict[str, Any], bytes | None]  # the manifest block, and the file's bytes when it is stored


def _skops(estimator: Any, spec: ModelSpec, checks: list[tuple[str, pd.DataFrame]], options: FormatOptions) -> Stored:
    try:
        import skops.io as sio
    except ImportError:
        return {"stored": False, "reason": "skops is not installed (pip install 'mlops-cli[onnx]')"}, None
    try:
        data = sio.dumps(estimator)
    except Exception as exc:  # an object skops cannot serialise
        return {"stored": False, "reason": f"skops cannot write it ({type(exc).__name__}: {short(exc)})"}, None
    needed = sorted(sio.get_untrusted_types(data=data))
    untrusted = [t for t in needed if t.split(".")[0] not in TRUSTED_PACKAGES and t not in options.trust]
    if untrusted:
        return {
            "stored": False,
            "reason": f"it needs types nobody trusted: {untrusted} (review them, then pass --trust TYPE for each)",
            "untrusted_types": untrusted,
        }, None
    # Read it back with exactly the list the manifest will hold, and check it answers as the artifact does.
    difference = _difference(estimator, load_skops(data, needed), spec, checks)
    if difference["max_abs_difference"] != 0 or difference["label_agreement"] not in (1, None):
        return {
            "stored": False,
            "reason": "the reloaded skops model answers differently",
            "agreement": difference,
        }, None
    return {"stored": True, "file": SKOPS_FILE, "trusted_types": needed, "agreement": difference}, data


def _onnx(estimator: Any, spec: ModelSpec, checks: list[tuple[str, pd.DataFrame]], options: FormatOptions) -> Stored:
    from importlib.metadata import PackageNotFoundError, version

    try:
        graph = convert(estimator, spec)
    except NotConvertible as exc:
        return {"stored": False, "reason": f"cannot convert it to ONNX ({exc.one_line()})"}, None
    try:
        predictor = OnnxPredictor(graph, spec)
    except Exception as exc:  # onnxruntime refuses the graph
        return {"stored": False, "reason": f"onnxruntime cannot load the converted graph ({short(exc)})"}, None
    agreement = _difference(estimator, predictor, spec, checks)
    tolerance = {"label_agreement": options.label_agreement, "max_abs_difference": options.tolerance}
    libraries: dict[str, str | None] = {}
    for dist in ("skl2onnx", "onnxruntime", "onnx"):
        try:
            libraries[dist] = version(dist)
        except PackageNotFoundError:
            libraries[dist] = None
    block = {"agreement": agreement, "tolerance": tolerance, "libraries": libraries}
    if agreement["rows"] == 0:
        return {
            **block,
            "stored": False,
            "reason": "no reference rows to check the conversion on (pass --train-data)",
        }, None
    labels = agreement["label_agreement"]
    if (labels is not None and labels < options.label_agreement) or agreement["max_abs_difference"] > options.tolerance:
        said = f"labels agree on {labels:.4%} of {agreement['rows']:,} rows, " if labels is not None else ""
        return {
            **block,
            "stored": False,
            "reason": (
                f"the ONNX model disagrees with the artifact beyond the tolerance: {said}largest difference "
                f"{agreement['max_abs_difference']:.3g} (allowed: {options.label_agreement:.4%} of labels, "
                f"{options.tolerance:g})"
            ),
        }, None
    return {**block, "stored": True, "file": ONNX_FILE}, graph


def _difference(estimator: Any, other: Any, spec: ModelSpec, checks: list[tuple[str, pd.DataFrame]]) -> dict[str, Any]:
    """How `other` (an ONNX predictor or a reloaded estimator) answers the check rows, against the artifact: the share
    of equal labels and the largest difference in probabilities (or a regressor's values, relative to max(1, |v|))."""
    import numpy as np

    from mlops_cli.runtime.model import LoadedModel

    original = LoadedModel.of(estimator, spec)
    if isinstance(other, OnnxPredictor):
        challenger = LoadedModel(spec, other, runtime="onnx")
    else:
        challenger = LoadedModel.of(other, spec)
    classifier = spec.task == "classifier"
    rows = agree = 0
    largest = 0.0
    for _, frame in checks:
        a, b = original.score(frame), challenger.score(frame)
        if len(a.prediction) == 0:
            continue
        rows += len(a.prediction)
        if classifier:
            agree += int((a.prediction.astype(str) == b.prediction.astype(str)).sum())
        if a.proba is not None and b.proba is not None:
            gap = np.abs(a.proba - b.proba)
        else:  # a regressor: float32 errors scale with the values, so relative to their typical size
            x, y = a.prediction.astype(float), b.prediction.astype(float)
            gap = np.abs(x - y) / max(1.0, float(np.nanmean(np.abs(x))))
        gap = np.where(np.isnan(gap), np.inf, gap)
        largest = max(largest, float(gap.max()) if gap.size else 0.0)
    return {
        "rows": rows,
        "data": [label for label, _ in checks],
        "label_agreement": (agree / rows if rows else 0.0) if classifier else None,
        "max_abs_difference": largest,
    }
