"""The versioned model directory: save and load a trained placement model, refusing bad artifacts.

Layout of ``models/NAME/``::

    metadata.json     ModelMetadata: version, seed, thresholds, trace hashes, code version,
                      feature schema, metrics, and a sha256 manifest of every other file
    dnn.pt            the supervised DNN (tensors and plain values; torch.load(weights_only=True))
    normaliser.json   the feature normaliser (placement.model.features.Normaliser)
    thresholds.json   the joint threshold the labels were made with (T_t, T_e, missing power)
    ppo.zip           the PPO policy (stable-baselines3), when trained
    actor.npz         the PPO actor's numpy matrices (placement.agents.actor), with ppo.zip:
                      what serving loads, without torch (:func:`load_served`)

:func:`load_model` checks, before it unpickles anything, that ``metadata.json`` exists and
parses, that its format and feature schema match this code, that every file of the manifest
exists with the recorded sha256 and that no unlisted file is present. ``PPO.load``
unpickles, so only artifacts this service wrote (and nobody changed since) are loaded.
:func:`load_served` makes the same checks and loads only what serving needs: with
``actor.npz`` that is numpy arrays and JSON, no torch (an ingress replica starts about 2 s
sooner); an artifact written before ``actor.npz`` existed is loaded by :func:`load_model`.
Every failure raises :class:`ArtifactError` naming the file or field and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from placement.agents.actor import ActorPolicy, load_actor, save_actor
from placement.agents.knobs import KnobLevels
from placement.agents.policy import Policy
from placement.core.threshold import Thresholds
from placement.core.trace import file_sha256
from placement.core.version import code_version
from placement.model.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, Normaliser

if TYPE_CHECKING:
    from placement.agents.dnn import DnnPolicy
    from placement.agents.ppo import PpoPolicy

MODEL_FORMAT = "placement.model/1"
METADATA_FILE = "metadata.json"
DNN_FILE = "dnn.pt"
NORMALISER_FILE = "normaliser.json"
THRESHOLDS_FILE = "thresholds.json"
PPO_FILE = "ppo.zip"
ACTOR_FILE = "actor.npz"
REQUIRED_FILES = (DNN_FILE, NORMALISER_FILE, THRESHOLDS_FILE)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
"""The bundled default model (rebuild: ``make model``)."""


class ArtifactError(ValueError):
    """A model directory that cannot be used: missing, mismatched or tampered (message says which)."""


@dataclass(frozen=True)
class ModelMetadata:
    """Provenance and schema of a saved model. ``files`` (the sha256 manifest) is filled by :func:`save_model`."""

    version: str
    seed: int
    thresholds: dict[str, Any]
    trace_hashes: dict[str, str]
    code_version: str = field(default_factory=code_version)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    feature_names: tuple[str, ...] = FEATURE_NAMES
    metrics: dict[str, Any] = field(default_factory=dict)
    dnn_config: dict[str, Any] = field(default_factory=dict)
    ppo_config: dict[str, Any] = field(default_factory=dict)
    knob_levels: dict[str, Any] | None = None
    serving: str = "dnn"
    format: str = MODEL_FORMAT
    files: dict[str, str] = field(default_factory=dict)
    temperature: dict[str, Any] | None = None
    """The serving policy's temperature and its provenance (:class:`placement.agents.temperature.PolicyTemperature`
    as a dict; written by :func:`set_temperature`); ``None``: P(GPU) as the network gives it (T = 1)."""

    @property
    def temperature_value(self) -> float:
        """The temperature the answers' P(GPU) is scaled by (1.0 without one)."""
        if self.temperature is None:
            return 1.0
        from placement.agents.temperature import PolicyTemperature

        try:
            return PolicyTemperature.from_dict(self.temperature).value
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{METADATA_FILE}: bad temperature ({exc}): refit it with `placement temperature`") from exc

    def to_dict(self) -> dict[str, Any]:
        """The metadata as JSON-ready values (``feature_names`` a list), as written to the metadata file."""
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        """Metadata read back from :meth:`to_dict` output; :class:`ArtifactError` when a required
        field is missing (unknown keys are ignored)."""
        missing = [k for k in ("version", "seed", "thresholds", "trace_hashes", "code_version", "feature_schema_version",
                               "feature_names", "files", "format") if k not in data]
        if missing:
            raise ArtifactError(f"{METADATA_FILE} lacks field(s) {', '.join(missing)}: re-save the model with save_model")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["feature_names"] = tuple(known["feature_names"])
        return cls(**known)


@dataclass
class LoadedModel:
    """A loaded model. ``policy`` serves (warm PPO when present, else the DNN); ``dnn`` is always there."""

    policy: Policy
    dnn: DnnPolicy
    normaliser: Normaliser
    metadata: ModelMetadata
    path: Path
    thresholds: Thresholds
    ppo: PpoPolicy | None = None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_model(
    out_dir: Path,
    *,
    dnn: DnnPolicy,
    ppo: PpoPolicy | None = None,
    normaliser: Normaliser,
    thresholds: Thresholds,
    metadata: ModelMetadata,
) -> Path:
    """Write the model directory atomically (a temp directory renamed into place; an existing
    directory is replaced). Returns ``out_dir``."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if metadata.thresholds != thresholds.as_dict():
        raise ArtifactError("metadata.thresholds differs from the thresholds given: pass thresholds.as_dict()")
    import torch

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch.save(dnn.to_checkpoint(), tmp / DNN_FILE)
        (tmp / NORMALISER_FILE).write_text(json.dumps(normaliser.to_dict(), indent=1))
        (tmp / THRESHOLDS_FILE).write_text(json.dumps(thresholds.as_dict(), indent=1))
        serving = "dnn"
        if ppo is not None:
            from placement.agents.ppo import load_ppo_policy

            ppo.save(tmp / PPO_FILE)
            # the actor as the saved zip gives it (what load_model would serve), as numpy
            saved = load_ppo_policy(tmp / PPO_FILE)
            save_actor(tmp / ACTOR_FILE, saved.mlp, saved.knobbed)
            serving = "ppo"
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        knob = dnn.knob_levels.to_dict() if dnn.knob_levels is not None else metadata.knob_levels
        meta = replace(metadata, files=files, serving=serving, knob_levels=knob,
                       dnn_config=dnn.config.to_dict(), format=MODEL_FORMAT)
        (tmp / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=1, sort_keys=True, default=_json_default))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def set_temperature(path: Path, temperature: Any) -> ModelMetadata:
    """Record the serving policy's temperature (a :class:`placement.agents.temperature.PolicyTemperature`)
    in the model directory's metadata (rewritten atomically; the hashed files are untouched)."""
    path = Path(path)
    meta = read_metadata(path)
    updated = replace(meta, temperature=temperature.to_dict())
    tmp = path / f".{METADATA_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(updated.to_dict(), indent=1, sort_keys=True, default=_json_default))
    os.replace(tmp, path / METADATA_FILE)
    return updated


def read_metadata(path: Path) -> ModelMetadata:
    """Parse and check ``metadata.json`` (format, feature schema); no other file is read."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"model directory not found: {path} (train one with `placement train` or use models/default)")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path} is missing: not a placement model directory (re-save with save_model)")
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON ({exc}): the artifact is damaged; retrain it") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{meta_path} must hold a JSON object")
    meta = ModelMetadata.from_dict(data)
    if meta.format != MODEL_FORMAT:
        raise ArtifactError(f"{meta_path}: format '{meta.format}' is not '{MODEL_FORMAT}': retrain with this code")
    if meta.feature_schema_version != FEATURE_SCHEMA_VERSION or meta.feature_names != FEATURE_NAMES:
        raise ArtifactError(
            f"{meta_path}: feature schema mismatch (model: version {meta.feature_schema_version}, "
            f"{len(meta.feature_names)} features; this code: version {FEATURE_SCHEMA_VERSION}, "
            f"{len(FEATURE_NAMES)} features): retrain the model with `placement train`"
        )
    return meta


def verify_files(path: Path, meta: ModelMetadata) -> None:
    """Every manifest file present with its sha256, required files listed, nothing unlisted."""
    path = Path(path)
    for name in REQUIRED_FILES:
        if name not in meta.files:
            raise ArtifactError(f"{path}: manifest in {METADATA_FILE} does not list required file {name}")
    if meta.serving == "ppo" and PPO_FILE not in meta.files:
        raise ArtifactError(f"{path}: metadata says serving=ppo but the manifest has no {PPO_FILE}")
    for name, digest in meta.files.items():
        if Path(name).name != name:
            raise ArtifactError(f"{path}: manifest entry '{name}' is not a plain file name")
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{file} is missing (listed in {METADATA_FILE}): the artifact is incomplete; retrain it")
        actual = file_sha256(file)
        if actual != digest:
            raise ArtifactError(
                f"{file} was modified after saving (sha256 {actual[:12]}..., manifest {digest[:12]}...): "
                "refusing to load it; retrain or restore the file"
            )
    extra = sorted(p.name for p in path.iterdir() if p.name != METADATA_FILE and p.name not in meta.files)
    if extra:
        raise ArtifactError(f"{path}: unlisted file(s) {', '.join(extra)} (not written by save_model): remove them")


def _checked_parts(path: Path) -> tuple[ModelMetadata, Normaliser, Thresholds, KnobLevels | None]:
    """Metadata, schema and manifest checked; the normaliser, thresholds and knob levels read."""
    meta = read_metadata(path)
    verify_files(path, meta)
    try:
        normaliser = Normaliser.load(path / NORMALISER_FILE)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path / NORMALISER_FILE}: {exc}") from exc
    try:
        thresholds_data = json.loads((path / THRESHOLDS_FILE).read_text())
        thresholds = Thresholds(**thresholds_data)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path / THRESHOLDS_FILE}: {exc}") from exc
    if thresholds.as_dict() != meta.thresholds:
        raise ArtifactError(f"{path}: {THRESHOLDS_FILE} disagrees with metadata.thresholds: retrain the model")
    knob_levels = KnobLevels.from_dict(meta.knob_levels) if meta.knob_levels else None
    return meta, normaliser, thresholds, knob_levels


@dataclass
class ServedModel:
    """What serving needs of a model directory: the serving ``policy`` (an
    :class:`~placement.agents.actor.ActorPolicy` read from ``actor.npz``, or the policy of
    :func:`load_model` for an artifact without it), its metadata, path and thresholds."""

    policy: Policy
    metadata: ModelMetadata
    path: Path
    thresholds: Thresholds
    normaliser: Normaliser


def load_served(path: Path = DEFAULT_MODEL_DIR) -> ServedModel:
    """The serving policy of a model directory after the checks of :func:`load_model`; without
    torch when the artifact serves PPO and has ``actor.npz`` (every artifact :func:`save_model`
    writes), else through :func:`load_model`."""
    path = Path(path)
    meta, normaliser, thresholds, knob_levels = _checked_parts(path)
    if meta.serving == "ppo" and ACTOR_FILE in meta.files:
        try:
            mlp, knobbed = load_actor(path / ACTOR_FILE)
        except (ValueError, KeyError, OSError, EOFError) as exc:
            raise ArtifactError(f"{path / ACTOR_FILE}: cannot load the actor ({exc}): retrain the model") from exc
        return ServedModel(ActorPolicy(mlp, knobbed, knob_levels), meta, path, thresholds, normaliser)
    loaded = load_model(path)
    return ServedModel(loaded.policy, loaded.metadata, path, loaded.thresholds, loaded.normaliser)


def load_model(path: Path = DEFAULT_MODEL_DIR) -> LoadedModel:
    """Load a model directory after checking metadata, schema and the sha256 manifest."""
    path = Path(path)
    meta, normaliser, thresholds, knob_levels = _checked_parts(path)
    import torch

    from placement.agents.dnn import DnnPolicy

    try:
        ckpt = torch.load(path / DNN_FILE, map_location="cpu", weights_only=True)
        dnn = DnnPolicy.from_checkpoint(ckpt, normaliser, knob_levels)
    except (RuntimeError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ArtifactError(f"{path / DNN_FILE}: cannot load the DNN ({exc}): retrain the model") from exc
    ppo = None
    if PPO_FILE in meta.files:
        from placement.agents.ppo import load_ppo_policy

        try:
            ppo = load_ppo_policy(path / PPO_FILE, knob_levels)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise ArtifactError(f"{path / PPO_FILE}: cannot load the PPO policy ({exc}): retrain the model") from exc
    return LoadedModel(
        policy=ppo if ppo is not None else dnn,
        dnn=dnn,
        normaliser=normaliser,
        metadata=meta,
        path=path,
        thresholds=thresholds,
        ppo=ppo,
    )
