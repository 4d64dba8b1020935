"""`visreps score` through its add_arguments/run functions on small files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from visreps.stages import score


def write_inputs(folder: Path, n_train: int = 120, n_test: int = 30, units: int = 10) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n_train + n_test, 4))
    responses = latent @ rng.standard_normal((4, units)) + 0.5 * rng.standard_normal((n_train + n_test, units))
    layers = {"conv": np.tanh(latent @ rng.standard_normal((4, 2 * 3 * 5))).reshape(-1, 2, 3, 5),
              "fc": rng.standard_normal((n_train + n_test, 20))}
    repetitions = responses[n_train:, None] + rng.standard_normal((n_test, 4, units))
    paths = {name: folder / name for name in ("train.npz", "test.npz", "train.npy", "test.npy", "reps.npy")}
    np.savez(paths["train.npz"], **{k: v[:n_train] for k, v in layers.items()})
    np.savez_compressed(paths["test.npz"], **{k: v[n_train:] for k, v in layers.items()})
    np.save(paths["train.npy"], responses[:n_train].astype(np.float32))
    np.save(paths["test.npy"], repetitions.mean(axis=1))
    np.save(paths["reps.npy"], repetitions)
    return paths


def run_score(paths: dict[str, Path], *extra: str) -> int:
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    args = parser.parse_args(["--train-features", str(paths["train.npz"]), "--test-features", str(paths["test.npz"]),
                              "--train-responses", str(paths["train.npy"]),
                              "--test-responses", str(paths["test.npy"]), *extra])
    return score.run(args)


@pytest.mark.parametrize("analysis", ["rsa", "encoding"])
def test_score_writes_the_result_json(tmp_path, analysis):
    paths = write_inputs(tmp_path)
    output = tmp_path / "out" / "result.json"
    assert run_score(paths, "--analysis", analysis, "--test-repetitions", str(paths["reps.npy"]),
                     "--n-bootstrap", "40", "--seed", "3", "--output", str(output)) == 0
    result = json.loads(output.read_text())
    assert result["analysis"] == analysis and result["selected_layer"] == "conv"
    assert set(result["selection_scores"]) == {"conv", "fc"}
    assert result["n_bootstrap"] == 40 and result["ci_low"] <= result["score"] <= result["ci_high"]
    assert result["score_normalised"] == pytest.approx(result["score"] / result["noise_ceiling"])
    assert result["seed"] == 3


def test_score_kendall_fixed_layer_prints_json(tmp_path, capsys):
    paths = write_inputs(tmp_path)
    per_target = tmp_path / "r.npy"
    assert run_score(paths, "--analysis", "rsa", "--compare", "kendall", "--layer", "fc", "--n-bootstrap", "10") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compare"] == "kendall" and result["selected_layer"] == "fc" and result["selection_scores"] == {}
    assert run_score(paths, "--analysis", "encoding", "--layers", "fc", "--n-bootstrap", "0",
                     "--per-target", str(per_target)) == 0
    assert np.load(per_target).shape == (10,)


def test_score_bad_input_exits_2_with_one_clear_line(tmp_path, capsys):
    paths = write_inputs(tmp_path)
    assert run_score({**paths, "train.npz": tmp_path / "missing.npz"}, "--analysis", "rsa") == 2
    assert "--train-features: file" in capsys.readouterr().err
    assert run_score(paths, "--analysis", "rsa", "--layer", "conv9") == 2
    assert "conv9" in capsys.readouterr().err
    responses = np.load(paths["train.npy"])
    responses[4, 2] = np.nan
    np.save(paths["train.npy"], responses)
    assert run_score(paths, "--analysis", "encoding") == 2
    assert "NaN or inf at stimulus 4, unit 2" in capsys.readouterr().err  # named with its flag and file
    paths = write_inputs(tmp_path)
    np.save(paths["test.npy"], np.load(paths["test.npy"])[:20])
    assert run_score(paths, "--analysis", "rsa") == 2
    assert "expected (20, features)" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_text("not a zip")
    assert run_score({**paths, "test.npz": tmp_path / "bad.npz"}, "--analysis", "rsa") == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_visreps_cli_runs_score(tmp_path, capsys):
    from visreps import cli

    paths = write_inputs(tmp_path)
    output = tmp_path / "cli.json"
    argv = ["score", "--analysis", "rsa", "--train-features", str(paths["train.npz"]),
            "--test-features", str(paths["test.npz"]), "--train-responses", str(paths["train.npy"]),
            "--test-responses", str(paths["test.npy"]), "--n-bootstrap", "20", "--output", str(output)]
    assert cli.main(argv) == 0
    result = json.loads(output.read_text())
    assert {"selected_layer", "selection_scores", "score", "ci_low", "ci_high", "n_bootstrap",
            "analysis"} <= set(result) and "noise_ceiling" not in result
    np.save(paths["test.npy"], np.load(paths["test.npy"])[:, :7])
    assert cli.main(argv) == 2
    assert "--train-responses has 10 units but --test-responses 7" in capsys.readouterr().err


def test_key_value_overrides_and_a_config_file_equal_the_flags(tmp_path):
    """`visreps score` takes the stages' convention: a --config file and key=value overrides; flags win."""
    paths = write_inputs(tmp_path)
    flagged, configured = tmp_path / "flags.json", tmp_path / "config.json"
    assert run_score(paths, "--analysis", "rsa", "--n-bootstrap", "20", "--seed", "5", "--output", str(flagged)) == 0
    experiment = tmp_path / "score.yaml"
    experiment.write_text(f"analysis: rsa\nn_bootstrap: 20\ntrain_features: {paths['train.npz']}\n"
                          f"test_features: {paths['test.npz']}\n")
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    args = parser.parse_args(["--config", str(experiment), "--seed", "5", f"train_responses={paths['train.npy']}",
                              f"test_responses={paths['test.npy']}", "seed=4", f"output={configured}"])
    assert score.run(args) == 0
    ours, theirs = json.loads(configured.read_text()), json.loads(flagged.read_text())
    for key in ("selected_layer", "selection_scores", "score", "ci_low", "ci_high", "seed"):
        assert ours[key] == theirs[key], key


def test_missing_inputs_are_named(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    assert score.run(parser.parse_args(["analysis=encoding"])) == 2
    error = capsys.readouterr().err
    assert "train_features, test_features, train_responses, test_responses not set" in error
