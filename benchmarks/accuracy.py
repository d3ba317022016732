"""Accuracy under a fixed wall-clock budget: each method's volume bundle trains on the phantom set for
``budget_s`` seconds of training loop (data loading before it not counted; no validation during it),
then the bundle's ``evaluate.json`` scores the held-out test cases (clinical protocol: Dice per organ).

Every method gets the same overrides (backbone, image size, batch, learning rate, no augmentation,
``keep_empty_slices``, seed, CPU data loading in the main process); the rest of each bundle's recipe
(optimiser, loss, schedule, method options) is its own. ``decoder_only`` uses ``samed_synapse`` with
the method switched. Each training runs in a fresh process (:func:`train_and_evaluate`).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"decoder_only": "samed_synapse", "samed": "samed_synapse", "gsam": "gsam_synapse", "cad": "cad_synapse",
           "parser": "parser_synapse"}


class TimeBudget:
    """Ignite handler: terminate the engine once ``seconds`` have passed since it started."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.check)

    def start(self, engine: Engine) -> None:
        self.started = time.perf_counter()

    def check(self, engine: Engine) -> None:
        if time.perf_counter() - self.started >= self.seconds:
            engine.terminate()


def train_for_budget(method: str, dataset_dir: Path, output_dir: Path, budget_s: float, overrides: dict) -> dict:
    """Train ``method`` with its bundle for ``budget_s`` s; save ``output_dir/best.pt`` (the final state)."""
    bundle = ROOT / "bundles" / BUNDLES[method]
    parser = ConfigParser()
    parser.read_config(str(bundle / "train.json"))
    parser.update({"dataset_dir": str(dataset_dir), "output_dir": str(output_dir), "random_init": True,
                   "max_epochs": 100_000, "val_interval": 100_000, "num_workers": 0, "progress": False, **overrides})
    if method == "decoder_only":
        parser["method"] = "decoder_only"
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    TimeBudget(budget_s).attach(trainer)
    started = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - started
    torch.save(parser.get_parsed_content("checkpoint_state").state_dict(), output_dir / "best.pt")
    return {"iterations": trainer.state.iteration, "epochs": trainer.state.epoch, "train_s": round(seconds, 1),
            "batch_size": parser["batch_size"]}


def _organ_dice(metrics_csv: Path) -> dict[str, float]:
    with open(metrics_csv, newline="") as handle:
        mean = next(row for row in csv.DictReader(handle) if row["case"] == "mean")
    return {key[: -len("_dice")]: float(value) for key, value in mean.items() if key.endswith("_dice") and key != "mean_dice"}


def train_and_evaluate(method: str, dataset_dir: Path, output_dir: Path, budget_s: float, overrides: dict) -> dict:
    """:func:`train_for_budget` in a fresh process, then ``evaluate.json`` on the test split.
    Returns the training facts plus ``dice`` per organ and ``mean_dice`` (clinical protocol)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.accuracy", method, str(dataset_dir), str(output_dir), str(budget_s),
           json.dumps(overrides)]
    trained = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if trained.returncode != 0:
        raise RuntimeError(f"training {method} failed:\n{trained.stderr[-3000:]}")
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    evaluate = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                str(ROOT / "bundles" / BUNDLES[method] / "evaluate.json"), "--dataset_dir", str(dataset_dir),
                "--checkpoint", str(output_dir / "best.pt"), "--output_dir", str(output_dir / "eval"),
                "--device", str(overrides.get("device", "auto"))]
    evaluated = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT)
    if evaluated.returncode != 0:
        raise RuntimeError(f"evaluating {method} failed:\n{evaluated.stderr[-3000:]}")
    dice = _organ_dice(output_dir / "eval" / "metrics_clinical.csv")
    return {"method": method, **result, "dice": dice, "mean_dice": round(sum(dice.values()) / len(dice), 4)}


if __name__ == "__main__":  # the training worker of train_and_evaluate
    name, data, out, budget, extra = sys.argv[1:6]
    print(json.dumps(train_for_budget(name, Path(data), Path(out), float(budget), json.loads(extra))))
