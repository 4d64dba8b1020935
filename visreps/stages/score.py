"""Score features computed anywhere against responses: RSA or ridge encoding, best layer, bootstrap CI.

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
from typing import Any, Iterator, Mapping

import numpy as np

from visreps.errors import VisrepsError


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
            raise ScoreInputError(f"{flag} {path}: not a readable .npz file ({error})") from error
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


def _existing(path: str | None, flag: str, suffix: str) -> Path | None:
    if path is None:
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
        raise ScoreInputError(f"{flag} {path}: not a readable .npy file ({error})") from error
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number):
        expected = "stimuli × units" if ndim == 2 else "stimuli × repetitions × units"
        raise ScoreInputError(f"{flag} {path}: expected a numeric {expected} array, got {array.dtype} {array.shape}")
    return np.asarray(array, dtype=np.float32 if array.dtype != np.float64 else np.float64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``visreps score`` options."""
    parser.add_argument("--analysis", required=True, choices=("rsa", "encoding"))
    parser.add_argument("--train-features", required=True, metavar="NPZ", help="one array per layer, rows = stimuli")
    parser.add_argument("--test-features", required=True, metavar="NPZ", help="same layers, test stimuli")
    parser.add_argument("--train-responses", required=True, metavar="NPY", help="stimuli × units")
    parser.add_argument("--test-responses", required=True, metavar="NPY", help="stimuli × units")
    parser.add_argument("--test-repetitions", metavar="NPY", help="stimuli × repetitions × units (noise ceiling)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap iterations (0: no CI)")
    parser.add_argument("--bootstrap-fraction", type=float, default=None,
                        help="stimuli kept per iteration (default 0.9; 1.0 with --replace)")
    parser.add_argument("--replace", action="store_true", help="classical bootstrap with replacement")
    parser.add_argument("--ci-level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="seed of selection, projection and bootstrap")
    parser.add_argument("--compare", choices=("spearman", "kendall"), default="spearman",
                        help="RDM comparison for RSA (Kendall = tau-a)")
    parser.add_argument("--layers", nargs="+", metavar="LAYER", help="candidate layers (default: all)")
    parser.add_argument("--layer", help="score this layer and skip selection")
    parser.add_argument("--projection-dim", type=int, default=4096,
                        help="sparse random projection size for selection/encoding (0: none)")
    parser.add_argument("--rsa-stimuli", type=int, default=1000, help="training stimuli drawn for RSA selection")
    parser.add_argument("--validation-fraction", type=float, default=0.2, help="encoding selection split")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--per-target", metavar="NPY", help="encoding: also save the per-target test r here")
    parser.add_argument("--output", metavar="JSON", help="write the result here (default: print it)")


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Read the files named in ``args``, evaluate, return the JSON-ready result."""
    from visreps.alignment import TestSplit, TrainSplit, evaluate_encoding, evaluate_rsa

    train_features = NpzLayers(_existing(args.train_features, "--train-features", ".npz"), "--train-features")
    test_features = NpzLayers(_existing(args.test_features, "--test-features", ".npz"), "--test-features")
    train_responses = _load_npy(_existing(args.train_responses, "--train-responses", ".npy"), "--train-responses", 2)
    test_responses = _load_npy(_existing(args.test_responses, "--test-responses", ".npy"), "--test-responses", 2)
    repetitions = _load_npy(_existing(args.test_repetitions, "--test-repetitions", ".npy"), "--test-repetitions", 3)
    if train_responses.shape[1] != test_responses.shape[1]:
        raise ScoreInputError(
            f"--train-responses has {train_responses.shape[1]} units but --test-responses {test_responses.shape[1]}"
        )
    train = TrainSplit(train_features, train_responses)
    test = TestSplit(test_features, test_responses, repetitions)
    common = dict(seed=args.seed, n_bootstrap=args.n_bootstrap, bootstrap_fraction=args.bootstrap_fraction,
                  replace=args.replace, ci_level=args.ci_level, layer=args.layer,
                  projection_dim=args.projection_dim or None, device=args.device, progress=sys.stderr.isatty())
    started = time.time()
    train = _restricted_train(train, args)
    if args.analysis == "rsa":
        result = evaluate_rsa(train, test, compare=args.compare, n_rsa_stimuli=args.rsa_stimuli, **common)
    else:
        result = evaluate_encoding(train, test, validation_fraction=args.validation_fraction, **common)
        if args.per_target:
            np.save(args.per_target, result.per_target_r)
    out = result.to_dict()
    out["seed"] = args.seed
    out["seconds"] = round(time.time() - started, 3)
    out["inputs"] = {key: getattr(args, key) for key in
                     ("train_features", "test_features", "train_responses", "test_responses", "test_repetitions")}
    return out


def _restricted_train(train: Any, args: argparse.Namespace) -> Any:
    """The train split limited to ``--layers`` (selection then only sees those candidates)."""
    if not args.layers or args.layer is not None:
        return train
    from visreps.alignment import TrainSplit
    from visreps.alignment.selection import check_layers

    check_layers(list(train.shapes), args.layers, "--train-features")
    return TrainSplit(_Subset(train.features, args.layers), train.responses)


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
        result = score(args)
    except VisrepsError as error:
        print(f"visreps score: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=False)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
        print(f"score: {result['analysis']} {result['selected_layer']} = {result['score']:.4f} "
              f"[{result['ci_low']}, {result['ci_high']}] -> {args.output}")
    else:
        print(text)
    return 0
