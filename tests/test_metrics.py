"""The written metrics.json (format 2: see the README's run folder table): the K-fold score at the averaged
curve's best epoch, every output of a several-output model, `last` for the last epoch, and
`learning_rate` kept out of the metrics."""

import csv
import json
import re
import textwrap

import numpy as np
import pytest
from cli_runner import invoke
from helpers import TWO_OUTPUTS_CONFIG

from kexp.runs import read_history


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- item 1: the K-fold score
KFOLD_ONE_OUTPUT = """
    seed: 5
    dataset: {name: npz, path: reg.npz}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 16, activation: relu}
        - {layer: Dense, units: 1}
    compile: {optimizer: {name: adam, learning_rate: 0.05}, loss: mse, metrics: [mae]}
    training:
      epochs: 8
      batch_size: 8
      callbacks: [{name: ReduceLROnPlateau, monitor: val_loss, patience: 1, factor: 0.5}]
    validation: {scheme: kfold, n_splits: 3, shuffle: true, monitor: val_mae}
    """


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfold")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.5, size=60)).astype("float32")
    np.savez(tmp / "reg.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    result = invoke("kfold", write(tmp / "exp.yaml", KFOLD_ONE_OUTPUT), "--runs-dir", tmp / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    (folder,) = (tmp / "runs").iterdir()
    return folder, json.loads((folder / "metrics.json").read_text()), result.output


def test_kfold_score_is_the_mean_curve_at_its_best_epoch_with_the_std_there(kfold_run):
    folder, m, _ = kfold_run
    histories = [read_history(folder / "folds" / f["id"] / "history.csv") for f in m["folds"]]
    val_mae = np.array([h["val_mae"] for h in histories])  # folds x epochs
    best = int(np.argmin(val_mae.mean(axis=0))) + 1  # by hand: the averaged curve's best epoch
    assert m["best_epoch"] == best and m["curve"]["best_epoch"] == best
    v = m["validation"]
    assert v["best_epoch_source"] == "mean_curve"
    for name in ("mae", "loss"):
        at_best = np.array([h[f"val_{name}"][best - 1] for h in histories])
        assert v["best"][name] == pytest.approx(at_best.mean())
        assert v["best_std"][name] == pytest.approx(at_best.std())
        at_last = np.array([h[f"val_{name}"][-1] for h in histories])
        assert v["last"][name] == pytest.approx(at_last.mean())
        assert v["last_std"][name] == pytest.approx(at_last.std())
    # the folds' own bests are per-fold detail; their mean (the old headline) is optimistic
    own_bests = [f["validation"]["best"]["mae"] for f in m["folds"]]
    assert [f["best_epoch"] for f in m["folds"]] != [best] * len(m["folds"]), "fixture: folds must disagree"
    assert np.mean(own_bests) < v["best"]["mae"]
    # the baseline margin is taken against the score, not the folds' own bests
    assert m["baseline"]["model"] == pytest.approx(v["best"]["mae"])
    assert m["baseline"]["margin"] == pytest.approx(m["baseline"]["value"] - v["best"]["mae"])


def test_last_epoch_is_called_last_and_final_means_the_retrained_model(kfold_run):
    folder, m, _ = kfold_run
    assert m["format"] == 2
    assert "final" not in m["validation"] and "final_std" not in m["validation"]
    assert set(m["train"]) >= {"last"} and "final" not in m["train"]
    for fold in m["folds"]:
        assert set(fold["validation"]) == {"last", "best"} and set(fold["train"]) == {"last", "best"}
        written = json.loads((folder / "folds" / fold["id"] / "metrics.json").read_text())
        assert "last" in written["validation"] and "final" not in written["validation"]


def test_learning_rate_is_kept_in_history_but_is_not_a_metric(kfold_run):
    folder, m, _ = kfold_run
    assert "learning_rate" in read_history(folder / "folds" / m["folds"][0]["id"] / "history.csv")
    dicts = [m["validation"]["best"], m["validation"]["last"], m["validation"]["best_std"], m["train"]["last"],
             m["train"]["best"]]
    for fold in m["folds"]:
        dicts += [*fold["validation"].values(), *fold["train"].values()]
    for d in dicts:
        assert d and "learning_rate" not in d, d


def test_single_output_names_its_output(kfold_run):
    _, m, _ = kfold_run
    assert m["main_metric"] == "mae"
    ((name, info),) = m["outputs"].items()
    assert info == {"main_metric": "mae", "task": "regression"}
    assert m["baselines"] == {name: m["baseline"]}


# --------------------------------------------------------------------------- item 3: several outputs
TWO_OUTPUTS = TWO_OUTPUTS_CONFIG


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    price = x @ [1.0, 0.5, -0.3] + rng.normal(scale=0.1, size=100)
    band = np.where(price > 0.5, "high", np.where(price < -0.5, "low", "mid"))
    with open(tmp / "two.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "price", "band"])
        for row, p, b in zip(x.round(4), price.round(4), band, strict=True):
            writer.writerow([*row, p, b])
    return tmp


def _run_two(tmp, command, validation):
    config = write(tmp / f"{command}.yaml", TWO_OUTPUTS + f"validation: {validation}\n")
    runs = tmp / f"runs-{command}"
    result = invoke(command, config, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    return json.loads((folder / "metrics.json").read_text()), " ".join(re.sub("[│┃]", " ", result.output).split())


def _check_every_output(m, text):
    assert m["main_metric"] == "price_mae"
    assert m["outputs"] == {"price": {"main_metric": "price_mae", "task": "regression"},
                            "band": {"main_metric": "band_accuracy", "task": "multiclass"}}
    assert list(m["baselines"]) == ["price", "band"] and m["baseline"] == m["baselines"]["price"]
    price, band = m["baselines"]["price"], m["baselines"]["band"]
    assert price["metric"] == "mae" and band["metric"] == "accuracy"
    for output, key in ((price, "price_mae"), (band, "band_accuracy")):
        assert output["model"] == pytest.approx(m["validation"]["best"][key])
        assert output["margin"] is not None and output["beats"] is not None
        assert output["test_model"] == pytest.approx(m["test"][key])
        assert re.search(rf"baseline {output['output']} \({output['metric']}\): [\d.]+, model: [\d.]+, "
                         r"margin: -?[\d.]+", text), text
    for which in ("best", "last"):
        assert {"price_mae", "price_mse", "band_accuracy", "loss"} <= set(m["validation"][which])
    assert "model: -" not in text and "margin: -," not in text


def test_two_output_holdout_reports_every_output(two_outputs):
    m, text = _run_two(two_outputs, "train", "{scheme: holdout, size: 0.25}")
    _check_every_output(m, text)
    for key in ("price_mae", "band_accuracy"):  # the results table has a row per output metric
        assert re.search(rf"{key} [\d.]+ [\d.]+ [\d.]+", text), text


def test_two_output_kfold_reports_every_output_per_fold(two_outputs):
    m, text = _run_two(two_outputs, "kfold", "{scheme: kfold, n_splits: 2, monitor: val_price_mae, "
                      "final: {epochs: 2}}")
    assert m["final_model"]["train"]["price_mae"] > 0 and "learning_rate" not in m["final_model"]["train"]
    _check_every_output(m, text)
    for fold in m["folds"]:
        for which in ("last", "best"):
            assert {"price_mae", "band_accuracy"} <= set(fold["validation"][which])
    # per-fold rows and the score show numbers for both outputs, never `-`
    for fold in m["folds"]:
        assert re.search(rf"{fold['id']} 2 \d( [\d.]+){{4}}", text), text
    for key in ("price_mae", "band_accuracy"):
        assert re.search(rf"{key} [\d.]+ ± [\d.]+ [\d.]+ ± [\d.]+", text), text


def test_resume_reads_folds_written_in_format_1(kfold_run, tmp_path):
    """A fold finished by the previous release (its metrics.json says `final` for the last epoch) is
    kept on resume and counted in the format-2 aggregates."""
    import shutil

    source, _, _ = kfold_run
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    (folder / "metrics.json").unlink()
    status = json.loads((folder / "status.json").read_text())
    status["status"] = "interrupted"
    (folder / "status.json").write_text(json.dumps(status))
    kept = folder / "folds" / "r0-f1" / "metrics.json"
    old = json.loads(kept.read_text())
    for part in ("validation", "train"):
        old[part] = {"final" if k == "last" else k: v for k, v in old[part].items()}
    kept.write_text(json.dumps(old))
    for fold in ("r0-f0", "r0-f2"):
        shutil.rmtree(folder / "folds" / fold)

    result = invoke("kfold", "--resume", folder, "--quiet")
    assert result.exit_code == 0, result.output
    m = json.loads((folder / "metrics.json").read_text())
    assert m["format"] == 2
    fold = next(f for f in m["folds"] if f["id"] == "r0-f1")
    assert fold["validation"]["last"] == old["validation"]["final"] and "final" not in fold["validation"]
    lasts = [f["validation"]["last"]["mae"] for f in m["folds"]]
    assert m["validation"]["last"]["mae"] == pytest.approx(np.mean(lasts))
