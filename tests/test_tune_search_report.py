"""The search report: ranking at one epoch (early-stopped trials apart), percentages only for fractions."""

import pytest
from PIL import Image

from oimnet.engine.tracking import RunLogger
from tune.search import STOPPED_TAG, parse_search
from tune.search_report import SearchTrial, best_and_plot, format_metric, rank_trials, report_text

SEARCH = parse_search(
    {
        "num_samples": 4,
        "metric": "val_mAP",
        "space": {"SOLVER.BASE_LR": {"loguniform": [0.001, 0.05]}, "MODEL.LOSS.OIM_EPS": {"uniform": [0.0, 0.3]}},
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
    },
    "test",
)


def _trial(name, history, stopped=None, test_map=None):
    return SearchTrial(
        run_id=name,
        values={"SOLVER.BASE_LR": "0.01", "MODEL.LOSS.OIM_EPS": name},
        history=history,
        stopped_at=stopped,
        test={"mAP": test_map} if test_map is not None else {},
    )


def test_percentages_only_for_fraction_metrics():
    assert format_metric("val_mAP", 0.1234) == "12.3 %"
    assert format_metric("top1", 0.5) == "50.0 %"
    assert format_metric("train_loss", 3.21) == "3.21"
    assert format_metric("val_loss_box_reid", 12.5) == "12.5"


def test_early_stopped_trials_are_not_ranked_against_completed_ones():
    # "stopped" has the highest value anywhere, but at epoch 2: after 2 epochs of training, not 4
    trials = [
        _trial("stopped", {2: 0.40}, stopped=2),
        _trial("full_low", {2: 0.10, 4: 0.20}, test_map=0.15),
        _trial("full_high", {2: 0.20, 4: 0.30}, test_map=0.25),
        _trial("stopped_low", {2: 0.05}, stopped=2),
    ]
    r = rank_trials(trials, "max", max_epochs=4)
    assert r.epoch == 4 and r.is_last_epoch
    assert [t.run_id for t in r.ranked] == ["full_high", "full_low"]
    assert [t.run_id for t in r.apart] == ["stopped", "stopped_low"]
    text = report_text(r, SEARCH)
    assert "best val_mAP = 30.0 % at epoch 4, run full_high:" in text
    assert "ranked on val_mAP at the last epoch (4), among the 2 trial(s) that reached it" in text
    assert "(its test mAP = 25.0 %; chosen on val_mAP)" in text
    assert "40.0 % at epoch 2" in text and "stopped early by ASHA at epoch 2" in text
    assert "4 trials with val_mAP (2 stopped early by ASHA)" in text


def test_mode_min_and_no_trial_at_the_last_epoch():
    trials = [_trial("a", {1: 3.0, 2: 2.5}), _trial("b", {1: 2.0}, stopped=1), _trial("c", {1: 2.8, 2: 2.7})]
    r = rank_trials(trials, "min", max_epochs=3)  # interrupted: nobody reached epoch 3
    assert r.epoch == 2 and not r.is_last_epoch
    assert [t.run_id for t in r.ranked] == ["a", "c"] and [t.run_id for t in r.apart] == ["b"]
    search = parse_search({"num_samples": 3, "metric": "train_loss", "mode": "min", "space": SEARCH.space}, "t")
    text = report_text(r, search)
    assert "best train_loss = 2.5 at epoch 2" in text and "%" not in text
    assert "none reached the last epoch" in text


def test_best_and_plot_reads_the_runs_of_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = RunLogger.start(uri, "search-test", run_name="sweep")
    logged = {  # eps -> (val_mAP by epoch, stopped epoch, test mAP)
        "0.05": ({2: 0.45}, 2, None),
        "0.1": ({2: 0.2, 4: 0.35}, None, 0.3),
        "0.2": ({2: 0.3, 4: 0.25}, None, 0.28),
    }
    for eps, (hist, stopped, test_map) in logged.items():
        run = RunLogger.start(uri, "search-test", parent_run_id=parent.run_id, tags={"row": f"eps={eps}"})
        run.log_params({"SOLVER.BASE_LR": 0.01, "MODEL.LOSS.OIM_EPS": eps, "SOLVER.MAX_EPOCHS": 4})
        for epoch, v in hist.items():
            run.log_metrics({"val_mAP": v, "train_loss": 5.0 - epoch}, step=epoch)
        if test_map is not None:
            run.log_metrics({"mAP": test_map}, step=4)
        if stopped is not None:
            run.set_tags({STOPPED_TAG: str(stopped)})
        run.end("FINISHED")
    text, files = best_and_plot(uri, parent.run_id, SEARCH, tmp_path / "plots")
    assert "best val_mAP = 35.0 % at epoch 4" in text
    assert "MODEL.LOSS.OIM_EPS = 0.1" in text.split("ranked (")[0]
    assert "45.0 % at epoch 2" in text.split("not ranked")[1]
    assert [p.name for p in files] == ["search_SOLVER_BASE_LR.png", "search_MODEL_LOSS_OIM_EPS.png"]
    for p in files:
        assert Image.open(p).size[0] > 100


@pytest.mark.parametrize("trials", [[]])
def test_rank_needs_a_trial(trials):
    with pytest.raises(ValueError, match="no trial"):
        rank_trials(trials, "max", 4)


def test_runs_tune_stopped_after_their_work_end_finished(tmp_path):
    """ASHA answers STOP at max_t too: a trial killed right after logging its last epoch is complete;
    one killed mid-run is not (it is left KILLED, for --resume)."""
    from oimnet.engine.tracking import get_client
    from tune.search import close_stopped_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = RunLogger.start(uri, "close-test", run_name="sweep")
    cases = {"complete": (4, True, None), "rung": (2, False, "2"), "midway": (3, False, None)}
    ids = {}
    for name, (epochs, test_at_end, stopped) in cases.items():
        run = RunLogger.start(uri, "close-test", parent_run_id=parent.run_id, tags={"row": name})
        run.log_params({"SOLVER.MAX_EPOCHS": 4})
        for epoch in range(1, epochs + 1):
            run.log_metrics({"epoch_time_s": 1.0, "val_mAP": 0.1}, step=epoch)
        if test_at_end:
            run.log_metrics({"mAP": 0.2}, step=4)
        if stopped:
            run.set_tags({STOPPED_TAG: stopped})
        run.end("KILLED")
        ids[name] = run.run_id
    assert close_stopped_runs(uri, parent.run_id) == 2
    client = get_client(uri)
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"complete": "FINISHED", "rung": "FINISHED", "midway": "KILLED"}
