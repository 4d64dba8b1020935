"""Score features computed anywhere against responses: RSA or ridge encoding, best layer, bootstrap CI.

Configured like every stage (configs/score/default.yaml, ``--config FILE``, ``key=value``); the flags below are
aliases of the keys of the same name (``--train-features X`` = ``train_features=X``) and win over both.

Examples:
  visreps score --analysis rsa --train-features train.npz --test-features test.npz \\
      --train-responses train.npy --test-responses test.npy --output result.json
  visreps score --analysis encoding ... --test-repetitions test_reps.npy --n-bootstrap 1000 --seed 1

Inputs: ``.npz`` files with one array per layer (rows = stimuli, any trailing shape is flattened), ``.npy``
responses (stimuli × units) and optional test repetitions (stimuli × repetitions × units) for a split-half
noise ceiling. The layer is chosen on the training split only (RSA: 1,000 seeded stimuli; encoding: seeded
80/20 split), then scored on the test split. The JSON written to --output (or printed) holds
selected_layer, selection_scores, score, ci_low, ci_high, n_bootstrap, analysis and, with repetitions,
noise_ceiling and score_normalised.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import numpy as np
from pydantic import Field, ValidationError

from visreps.config import ConfigError, ConfigModel, runtime_field
from visreps.errors import VisrepsError
from visreps.stages.common import add_config_arguments, stage_config


class ScoreInputError(VisrepsError):
    """A file given to ``visreps score`` is missing or malformed."""


class NpzLayers(Mapping):
    """The arrays of an ``.npz`` file by name, loaded one at a time (flattened to stimuli × features);
    ``shapes`` comes from the array headers without loading any data."""

    def __init__(self, path: Path, flag: str) -> None:
        self.path, self.flag = path, flag
        try:
            self._file = np.load(path, allow_pickle=False)
            self.shapes = {name: self._flat(self._header_shape(name)) for name in self._file.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ScoreInputError(f"{flag} {path}: not a readable .npz file ({error}); it may be truncated: "
                                  "write it again with np.savez(path, layer=array, ...)") from None
        if not self.shapes:
            raise ScoreInputError(f"{flag} {path}: the .npz file holds no arrays (one per layer expected)")

    @staticmethod
    def _flat(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], int(np.prod(shape[1:]))) if len(shape) >= 2 else shape

    def _header_shape(self, name: str) -> tuple[int, ...]:
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{name}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(member)
        return tuple(shape)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(name)
        array = self._file[name]
        if not np.issubdtype(array.dtype, np.number):
            raise ScoreInputError(f"{self.flag} {self.path}: layer {name!r} has non-numeric dtype {array.dtype}")
        return array.reshape(self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def _existing(path: str, flag: str, suffix: str) -> Path | None:
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise ScoreInputError(f"{flag}: file {file} does not exist")
    if file.suffix != suffix:
        raise ScoreInputError(f"{flag}: {file} should be a {suffix} file")
    return file


def _load_npy(path: Path | None, flag: str, ndim: int) -> np.ndarray | None:
    if path is None:
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ScoreInputError(f"{flag} {path}: not a readable .npy file ({error}); it may be truncated: "
                              "write it again with np.save") from None
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number):
        expected = "stimuli × units" if ndim == 2 else "stimuli × repetitions × units"
        raise ScoreInputError(f"{flag} {path}: expected a numeric {expected} array, got {array.dtype} {array.shape}")
    array = np.asarray(array, dtype=np.float32 if array.dtype != np.float64 else np.float64)
    if ndim == 2 and not np.isfinite(array).all():  # repetitions may hold NaN where a stimulus was shown fewer times
        stimulus, unit = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ScoreInputError(f"{flag} {path}: NaN or inf at stimulus {stimulus}, unit {unit} (of {array.shape}); "
                              "remove or impute those units/stimuli before scoring")
    return array


class ScoreConfig(ConfigModel):
    """What ``visreps score`` scores and how (defaults in configs/score/default.yaml). ``score`` logs nothing to
    MLflow (it reads and writes files only), so it has no experiment or force setting."""

    analysis: Literal["rsa", "encoding"] | None = Field(None, description="rsa or encoding (required)")
    train_features: str = Field("", description=".npz, one array per layer, rows = training stimuli")
    test_features: str = Field("", description=".npz, the same layers, rows = test stimuli")
    train_responses: str = Field("", description=".npy, training stimuli × units")
    test_responses: str = Field("", description=".npy, test stimuli × units")
    test_repetitions: str = Field("", description=".npy, test stimuli × repetitions × units (noise ceiling)")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap iterations (0: no CI)")
    bootstrap_fraction: float | None = Field(None, description="stimuli kept per iteration (0.9; 1.0 with replace)")
    replace: bool = Field(False, description="classical bootstrap with replacement")
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = Field(0, description="seed of selection, projection and bootstrap")
    compare: Literal["spearman", "kendall"] = Field("spearman", description="RDM comparison (Kendall = tau-a)")
    layers: list[str] = Field(default_factory=list, description="candidate layers ([] = all)")
    layer: str = Field("", description="score this layer and skip selection")
    projection_dim: int = Field(4096, ge=0, description="sparse random projection for selection/encoding (0: none)")
    rsa_stimuli: int = Field(1000, ge=3, description="training stimuli drawn for RSA selection")
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="encoding selection split")
    device: str = runtime_field("", description="torch device, e.g. cuda ('' = where the data are: cpu)")
    per_target: str = runtime_field("", description="encoding: also save the per-target test r to this .npy")
    output: str = runtime_field("", description="write the result JSON here ('' = print it)")


CONFIG_CLASS = ScoreConfig
#: flag -> its argparse options; each flag is an alias of the config key of the same name (- for _)
FLAGS: dict[str, Any] = {
    "--analysis": dict(choices=("rsa", "encoding")), "--train-features": dict(metavar="NPZ"),
    "--test-features": dict(metavar="NPZ"), "--train-responses": dict(metavar="NPY"),
    "--test-responses": dict(metavar="NPY"), "--test-repetitions": dict(metavar="NPY"),
    "--n-bootstrap": dict(type=int), "--bootstrap-fraction": dict(type=float),
    "--replace": dict(action="store_const", const=True), "--ci-level": dict(type=float), "--seed": dict(type=int),
    "--compare": dict(choices=("spearman", "kendall")), "--layers": dict(nargs="+", metavar="LAYER"),
    "--layer": dict(), "--projection-dim": dict(type=int), "--rsa-stimuli": dict(type=int),
    "--validation-fraction": dict(type=float), "--device": dict(), "--per-target": dict(metavar="NPY"),
    "--output": dict(metavar="JSON"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``/``key=value`` like every stage, and the flags of FLAGS as aliases of the same keys."""
    add_config_arguments(parser)
    for flag, options in FLAGS.items():
        name = flag[2:].replace("-", "_")
        parser.add_argument(flag, dest=f"flag_{name}", default=None,
                            help=f"same as {name}=... ({ScoreConfig.model_fields[name].description or ''})",
                            **options)


def score_config(args: argparse.Namespace) -> ScoreConfig:
    """Defaults, ``--config``, ``key=value`` overrides, then the flags (which win)."""
    config = stage_config(ScoreConfig, "score", args)
    flags = {key[5:]: value for key, value in vars(args).items() if key.startswith("flag_") and value is not None}
    try:
        config = ScoreConfig.model_validate({**config.model_dump(), **flags})
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        raise ConfigError(f"--{name.replace('_', '-')} ({name}): {first['msg']}") from None
    if config.analysis is None:
        raise ConfigError("analysis is not set; pass --analysis rsa|encoding (or analysis=rsa)")
    missing = [name for name in ("train_features", "test_features", "train_responses", "test_responses")
               if not getattr(config, name)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set; pass "
                          + " ".join(f"--{name.replace('_', '-')} FILE" for name in missing))
    return config


def score(config: ScoreConfig) -> dict[str, Any]:
    """Read the files named in ``config``, evaluate, return the JSON-ready result."""
    from visreps.alignment import TestSplit, TrainSplit, evaluate_encoding, evaluate_rsa

    train_features = NpzLayers(_existing(config.train_features, "--train-features", ".npz"), "--train-features")
    test_features = NpzLayers(_existing(config.test_features, "--test-features", ".npz"), "--test-features")
    train_responses = _load_npy(_existing(config.train_responses, "--train-responses", ".npy"), "--train-responses", 2)
    test_responses = _load_npy(_existing(config.test_responses, "--test-responses", ".npy"), "--test-responses", 2)
    repetitions = _load_npy(_existing(config.test_repetitions, "--test-repetitions", ".npy"), "--test-repetitions", 3)
    if train_responses.shape[1] != test_responses.shape[1]:
        raise ScoreInputError(
            f"--train-responses has {train_responses.shape[1]} units but --test-responses {test_responses.shape[1]}"
        )
    train = TrainSplit(train_features, train_responses)
    test = TestSplit(test_features, test_responses, repetitions)
    common = dict(seed=config.seed, n_bootstrap=config.n_bootstrap, bootstrap_fraction=config.bootstrap_fraction,
                  replace=config.replace, ci_level=config.ci_level, layer=config.layer or None,
                  projection_dim=config.projection_dim or None, device=config.device or None,
                  progress=sys.stderr.isatty())
    started = time.time()
    train = _restricted_train(train, config)
    if config.analysis == "rsa":
        result = evaluate_rsa(train, test, compare=config.compare, n_rsa_stimuli=config.rsa_stimuli, **common)
    else:
        result = evaluate_encoding(train, test, validation_fraction=config.validation_fraction, **common)
        if config.per_target:
            np.save(config.per_target, result.per_target_r)
    out = result.to_dict()
    out["seed"] = config.seed
    out["seconds"] = round(time.time() - started, 3)
    out["inputs"] = {key: getattr(config, key) for key in
                     ("train_features", "test_features", "train_responses", "test_responses", "test_repetitions")}
    return out


def _restricted_train(train: Any, config: ScoreConfig) -> Any:
    """The train split limited to ``--layers`` (selection then only sees those candidates)."""
    if not config.layers or config.layer:
        return train
    from visreps.alignment import TrainSplit
    from visreps.alignment.selection import check_layers

    check_layers(list(train.shapes), config.layers, "--train-features")
    return TrainSplit(_Subset(train.features, config.layers), train.responses)


class _Subset(Mapping):
    def __init__(self, layers: Mapping[str, Any], names: list[str]) -> None:
        self.layers, self.names = layers, list(names)
        self.shapes = {name: layers.shapes[name] for name in self.names}

    def __getitem__(self, name: str) -> Any:
        if name not in self.names:
            raise KeyError(name)
        return self.layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def run(args: argparse.Namespace) -> int:
    """Run ``visreps score``; 0 on success, 2 with one error line on stderr for bad input."""
    try:
        config = score_config(args)
        result = score(config)
    except VisrepsError as error:
        print(f"visreps score: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=False)
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(text + "\n")
        print(f"score: {result['analysis']} {result['selected_layer']} = {result['score']:.4f} "
              f"[{result['ci_low']}, {result['ci_high']}] -> {config.output}")
    else:
        print(text)
    return 0
