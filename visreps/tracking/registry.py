"""The Model Registry and model files in MLflow: log model files, register versions with aliases, fetch them.

``load_model(uri_or_path)`` -> ``LoadedModel``: ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``runs:/<run_id>/<artifact path>`` (fetched from the configured store), or a local file/folder
(``visreps.models.load_file``).

Formats. The registered source is a run artifact folder ``model/`` (and ``model_epoch0/``) with ``model.pt`` — a
state dict plus metadata, read with ``torch.load(weights_only=True)`` and rebuilt through
``visreps.models.create_model`` — and ``metadata.json``: it survives refactors and loads without executing
pickled code. The final network is also logged as an MLflow pytorch-flavour model in ``mlflow_model/``
(``log_pytorch_flavour``: ``mlflow.pytorch.save_model`` with ``serialization_format="pickle"`` and explicit pip
requirements), reloadable with ``mlflow.pytorch.load_model`` as the real module, so forward hooks fire. Not
MLflow 3's default ``torch.export`` format: it reloads as a flat graph whose hooks never fire (useless for
activations). The pickle names classes by module path, so loading it needs ``visreps`` (and ``timm`` for timm
models) importable; the state-dict copy is what ``load_model`` uses.

Registry layout: registered model ``visreps-<architecture>`` (``visreps-custom_cnn_small``,
``visreps-timm-resnet50``); one version per trained network with source ``runs:/<run_id>/model`` and tags
K, label_source, seed, epoch, architecture, image_size, dataset, config_hash; aliases ``k<K>-<source>-s<seed>``
for the trained network and ``k<K>-<source>-s<seed>-epoch0`` for its untrained initial state.
``visreps.tracking.load_model("models:/visreps-custom_cnn_small@k8-pca_pixels-s1")`` fetches and rebuilds it.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any, Iterator

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from visreps.models.files import MLFLOW_URI_SCHEMES, MODEL_FILE, LoadedModel, load_file, read_weights_file
from visreps.models.registry import ModelError
from visreps.tracking.runs import StageRun, client, download_artifacts
from visreps.tracking.store import ensure_tracking_available

MODEL_ARTIFACT = "model"
EPOCH0_ARTIFACT = "model_epoch0"
PYTORCH_FLAVOUR_ARTIFACT = "mlflow_model"
_ALIAS_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def registered_model_name(architecture: str) -> str:
    """``visreps-<architecture>`` with ``timm:`` written ``timm-`` and other odd characters as ``-``."""
    safe = architecture.replace("timm:", "timm-")
    return "visreps-" + re.sub(r"[^A-Za-z0-9_.\-]+", "-", safe)


def model_alias(k: int, label_source: str, seed: int, epoch0: bool = False) -> str:
    """``k<K>-<label source>-s<seed>`` (``-epoch0`` for the untrained state); letters, digits, - and _ only."""
    source = _ALIAS_UNSAFE.sub("-", label_source).strip("-") or "labels"
    alias = f"k{int(k)}-{source}-s{int(seed)}"
    return f"{alias}-epoch0" if epoch0 else alias


def log_model_file(run: StageRun, model_file: str | Path, artifact_path: str = MODEL_ARTIFACT) -> str:
    """Log ``model_file`` as ``<artifact_path>/model.pt`` plus ``metadata.json``; returns ``runs:/`` URI."""
    metadata = read_weights_file(model_file).get("metadata", {})
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder)
        (staged / MODEL_FILE).write_bytes(Path(model_file).read_bytes())
        (staged / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        run.log_artifacts(staged, artifact_path)
    return f"runs:/{run.run_id}/{artifact_path}"


def flavour_requirements(model: Any) -> list[str]:
    """Pinned pip requirements of a pickled network: torch, plus timm for timm architectures."""
    packages = ["torch"] + (["timm"] if type(model).__module__.split(".")[0] == "timm" else [])
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={package_version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def log_pytorch_flavour(run: StageRun, model: Any, metadata: dict[str, Any] | None = None,
                        artifact_path: str = PYTORCH_FLAVOUR_ARTIFACT) -> str:
    """Log ``model`` (a CPU ``nn.Module`` in eval mode) as an MLflow pytorch-flavour model; its ``runs:/`` URI.

    Pickle serialisation (not torch.export, whose reloaded graph ignores forward hooks) with pinned
    ``flavour_requirements``; ``metadata`` goes into the MLmodel file. Reload with ``load_pytorch_flavour``.
    """
    import mlflow.pytorch

    plain = json.loads(json.dumps(metadata or {}, default=str))
    pytorch_logger = logging.getLogger("mlflow.pytorch")
    level = pytorch_logger.level
    pytorch_logger.setLevel(logging.ERROR)  # its warning against pickle files: this format is chosen knowingly
    try:
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / artifact_path
            mlflow.pytorch.save_model(model, str(target), serialization_format="pickle",
                                      pip_requirements=flavour_requirements(model), metadata=plain)
            run.log_artifacts(target, artifact_path)
    finally:
        pytorch_logger.setLevel(level)
    return f"runs:/{run.run_id}/{artifact_path}"


def load_pytorch_flavour(uri: str, device: str = "cpu") -> Any:
    """The ``nn.Module`` logged by ``log_pytorch_flavour``, from ``runs:/<run_id>/mlflow_model`` or a local folder.

    Fetched from the configured store (not MLflow's global tracking URI) and read with
    ``mlflow.pytorch.load_model(..., map_location=device)``.
    """
    import mlflow.pytorch

    local = _download_runs_uri(uri)[0] if uri.startswith("runs:/") else Path(uri).expanduser()
    if not (local / "MLmodel").is_file():
        raise ModelError(f"{uri} holds no MLflow model (no MLmodel file); the pytorch flavour is at "
                         f"runs:/<run_id>/{PYTORCH_FLAVOUR_ARTIFACT}")
    return mlflow.pytorch.load_model(str(local), map_location=device)


def _ensure_registered_model(name: str, description: str) -> None:
    mlflow_client = client()
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(name, description=description)
        except MlflowException as error:  # created concurrently by another process
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                raise


def register_model_version(run_id: str, artifact_path: str, name: str, alias: str,
                           tags: dict[str, Any]) -> ModelVersion:
    """A new version of ``name`` from ``runs:/<run_id>/<artifact_path>``, tagged, with ``alias`` pointing at it."""
    _ensure_registered_model(name, "visreps networks trained from scratch (state dict + metadata; "
                                   "load with visreps.tracking.load_model('models:/<name>@<alias>'))")
    mlflow_client = client()
    version = mlflow_client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id,
        tags={str(key): str(value) for key, value in tags.items()},
        description=f"alias {alias}",
    )
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return version


def find_registered_version(name: str, run_id: str, artifact_path: str) -> ModelVersion | None:
    """The newest version of ``name`` made from ``runs:/<run_id>/<artifact_path>``, or None."""
    mlflow_client = client()
    try:
        versions = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    wanted = f"runs:/{run_id}/{artifact_path}"
    matching = [version for version in versions if version.source.rstrip("/") == wanted]
    return max(matching, key=lambda version: int(version.version)) if matching else None


def ensure_registered(run_id: str, artifact_path: str, name: str, alias: str, tags: dict[str, Any]) -> ModelVersion:
    """Point ``alias`` at the version made from this run's artifact, registering one only if there is none."""
    version = find_registered_version(name, run_id, artifact_path)
    if version is None:
        return register_model_version(run_id, artifact_path, name, alias, tags)
    client().set_registered_model_alias(name, alias, version.version)
    return version


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    body = uri[len("models:/"):].strip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, alias, None
    if "/" in body:
        name, version = body.rsplit("/", 1)
        return name, None, version
    raise ModelError(f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")


def resolve_model_version(uri: str) -> ModelVersion:
    """The registry entry of a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI."""
    name, alias, version = _parse_models_uri(uri)
    mlflow_client = client()
    try:
        registered = mlflow_client.get_registered_model(name)
    except MlflowException:
        names = [model.name for model in mlflow_client.search_registered_models(max_results=50)]
        raise ModelError(f"no registered model {name!r} in {ensure_tracking_available()} "
                         f"(registered: {', '.join(names) or 'none'})") from None
    try:
        if alias is not None:
            return mlflow_client.get_model_version_by_alias(name, alias)
        return mlflow_client.get_model_version(name, version)
    except MlflowException:
        aliases = sorted(getattr(registered, "aliases", {}) or {})
        wanted = f"alias {alias!r}" if alias is not None else f"version {version!r}"
        raise ModelError(f"registered model {name!r} has no {wanted}; aliases: {', '.join(aliases) or 'none'}") from None


def _download_runs_uri(uri: str) -> tuple[Path, str]:
    body = uri[len("runs:/"):].strip("/")
    if "/" not in body:
        raise ModelError(f"{uri!r} names no artifact; use runs:/<run_id>/model (or model_epoch0, checkpoints/...)")
    run_id, artifact_path = body.split("/", 1)
    try:
        return download_artifacts(run_id, artifact_path), run_id
    except MlflowException as error:
        raise ModelError(f"cannot fetch {uri}: {error.message.splitlines()[0]}") from None


def fetch_checkpoint(uri: str) -> tuple[Path, dict[str, Any]]:
    """Download the model file/folder behind a ``runs:/`` or ``models:/`` URI; (local path, extra metadata)."""
    ensure_tracking_available()
    if uri.startswith("runs:/"):
        local, run_id = _download_runs_uri(uri)
        return local, {"run_id": run_id, "source_uri": uri}
    if not uri.startswith("models:/"):
        raise ModelError(f"{uri!r} is neither a runs:/ nor a models:/ URI")
    version = resolve_model_version(uri)
    name, alias, _ = _parse_models_uri(uri)
    if version.source.startswith("runs:/"):
        local, _ = _download_runs_uri(version.source)
    else:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source,
                                                              tracking_uri=ensure_tracking_available()))
        except MlflowException as error:
            raise ModelError(f"cannot fetch {uri} from {version.source}: {error.message.splitlines()[0]}") from None
    extra = {"run_id": version.run_id, "registered_model": name, "version": int(version.version),
             "alias": alias, "source_uri": uri}
    return local, extra


def load_model(uri_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A visreps-trained network (eval mode, on ``device``) from a ``runs:/``/``models:/`` URI or a local path.

    URIs are fetched with ``fetch_checkpoint`` and their run id, registered model, version and alias are added
    to the metadata; paths (file, checkpoint, folder with model.pt) go to ``visreps.models.load_file``.
    """
    text = str(uri_or_path)
    if text.startswith(MLFLOW_URI_SCHEMES):
        local, extra = fetch_checkpoint(text)
        loaded = load_file(local, device)
        loaded.metadata.update(extra)
        return loaded
    return load_file(Path(text).expanduser(), device)


@contextmanager
def system_metrics(run_id: str, enabled: bool, interval_s: float = 10.0) -> Iterator[None]:
    """Log CPU/GPU/memory usage (``system/...`` metrics) to ``run_id`` every ``interval_s`` while the block runs."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=ensure_tracking_available())
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
