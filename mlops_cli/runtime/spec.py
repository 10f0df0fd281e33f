"""A typed, frozen view of a version's manifest: what the runtime needs to know to take rows and answer for them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import SchemaMismatch
from mlops_cli.registry import ARTIFACT

if TYPE_CHECKING:
    from mlops_cli.registry import Version

KINDS = ("numeric", "boolean", "categorical", "datetime")


@dataclass(frozen=True)
class FeatureSpec:
    """One input column as registered. `kind` is None when the model was registered without training data."""

    name: str
    kind: str | None = None
    dtype: str | None = None
    categories: frozenset[str] | None = None  # None: not recorded (too many, or no training data)
    min: float | None = None
    max: float | None = None
    missing_share: float | None = None

    @property
    def integer(self) -> bool:
        """Trained as integers: a text column of whole numbers is read back as int64, not float64."""
        return (self.dtype or "").startswith(("int", "uint"))

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> FeatureSpec:
        categories = entry.get("categories")
        return cls(
            name=str(entry["name"]),
            kind=entry.get("kind"),
            dtype=entry.get("dtype"),
            categories=frozenset(map(str, categories)) if categories is not None else None,
            min=entry.get("min"),
            max=entry.get("max"),
            missing_share=entry.get("missing_share"),
        )


@dataclass(frozen=True)
class ModelSpec:
    """Task, classes, features and input contract of a model; the version's identity when it is registered."""

    task: str
    classes: tuple[Any, ...] | None
    features: tuple[FeatureSpec, ...]
    accepts_missing: bool = True
    accepts_unseen: bool = True
    target: str | None = None
    estimator_class: str | None = None
    name: str | None = None
    version: str | None = None
    sha256: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.name else "the model"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelSpec:
        """From a manifest, registered (with name, version and files) or still being built by `register`."""
        contract = manifest.get("input_contract") or {}
        classes = manifest.get("classes")
        files = manifest.get("files") or {}
        return cls(
            task=manifest.get("task") or "unknown",
            classes=tuple(classes) if classes is not None else None,
            features=tuple(FeatureSpec.from_manifest(f) for f in manifest.get("features") or []),
            accepts_missing=bool(contract.get("accepts_missing", True)),
            accepts_unseen=bool(contract.get("accepts_unseen", True)),
            target=manifest.get("target"),
            estimator_class=manifest.get("estimator_class"),
            name=manifest.get("name"),
            version=manifest.get("version"),
            sha256=(files.get(ARTIFACT) or {}).get("sha256"),
        )

    @classmethod
    def of(cls, version: Version) -> ModelSpec:
        return cls.from_manifest({**version.manifest, "name": version.name, "version": version.version})

    def require_features(self, columns: Iterable[str], *, where: str) -> list[str]:
        """The model's feature names; SchemaMismatch naming every one that `columns` lacks."""
        features = self.feature_names
        if not features:
            raise SchemaMismatch(
                f"{self.ref} records no feature names",
                "register it with --train-data, or fit it on a DataFrame so it knows its columns",
            )
        present = set(columns)
        missing = [f for f in features if f not in present]
        if missing:
            raise SchemaMismatch(
                f"{where} lacks {self.ref}'s feature columns {missing}",
                "pass data with the model's schema (extra columns are ignored, order does not matter)",
            )
        return features
