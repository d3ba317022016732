"""Handler state that must survive a resume (the best-checkpoint record)."""

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointSaver

from medsam_ft.handlers import BestMetricState


def test_resume_keeps_the_best_checkpoint_record(tmp_path):
    """After --resume the first validation replaces best.pt only when it beats the earlier run's best."""
    model = torch.nn.Linear(1, 1, bias=False)

    def validation(metric: float, weight: float, saver: CheckpointSaver, evaluator: Engine) -> None:
        with torch.no_grad():
            model.weight.fill_(weight)
        evaluator.state.metrics = {"val_mean_dice": metric}
        saver.metrics_completed(evaluator)

    def run() -> tuple[Engine, CheckpointSaver]:
        evaluator = Engine(lambda engine, batch: None)
        evaluator.state.key_metric_name = "val_mean_dice"
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1, -1
        saver = CheckpointSaver(str(tmp_path), {"model": model}, save_key_metric=True, key_metric_filename="best.pt")
        saver.attach(evaluator)
        return evaluator, saver

    def best_weight() -> float:
        return float(torch.load(tmp_path / "best.pt", weights_only=True)["weight"])

    evaluator, saver = run()
    validation(0.8, 1.0, saver, evaluator)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 0.8, 3
    saved = BestMetricState(evaluator, [saver]).state_dict()
    assert saved == {"best_metric": 0.8, "best_metric_epoch": 3}

    resumed, resumed_saver = run()
    BestMetricState(resumed, [resumed_saver]).load_state_dict(saved)
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.8, 3)
    validation(0.5, 2.0, resumed_saver, resumed)
    assert best_weight() == 1.0  # a worse first validation leaves the earlier best in place
    validation(0.9, 3.0, resumed_saver, resumed)
    assert best_weight() == 3.0
