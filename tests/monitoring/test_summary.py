"""The run summary (what the quickstart prints) and the per-epoch line, from records written here by hand, and
the metrics.jsonl reader's tolerance of a torn last line."""
import json

import pytest

from ffcv_amcl.monitoring.metrics import read_metrics
from ffcv_amcl.monitoring.names import head_values, heads
from ffcv_amcl.monitoring.summary import epoch_line, main, run_summary


def health(c, p10, p50, p90, neg50, at_min, at_max, rho):
    return {f"tau_pos_p10_head{c}": p10, f"tau_pos_p50_head{c}": p50, f"tau_pos_p90_head{c}": p90,
            f"tau_neg_p50_head{c}": neg50, f"tau_pos_at_min_head{c}": at_min, f"tau_pos_at_max_head{c}": at_max,
            f"tau_neg_at_min_head{c}": 0.0, f"tau_neg_at_max_head{c}": 0.25, f"rank_corr_s_tau_head{c}": rho}


RECORDS = [
    {"epoch": 0, "step": 0, "loss": None, "lr": 0.0, "images_per_s": None, "knn_top1": 20.5},
    {"epoch": 1, "step": 4, "loss": 5.25, "lr": 0.1, "images_per_s": 100.0, "online_linear_top1": 30.0},
    {"epoch": 2, "step": 8, "loss": 5.0, "lr": 0.05, "images_per_s": 300.0, "knn_top1": 42.125,
     "online_linear_top1": 55.5, **health(0, 0.05, 0.25, 1.5, 0.125, 0.01, 0.02, -0.5),
     **health(1, 0.1, 0.5, 1.0, 0.375, 0.0, 0.0, None)},
]


def test_the_summary_lines():
    assert run_summary(RECORDS) == [
        "kNN top-1 before training (epoch 0, untrained network): 20.50%",
        "kNN top-1 after 2 epochs: 42.12% (+21.62 points)",
        "online linear probe top-1 after 2 epochs: 55.50%",
        "head 0 temperatures: tau+ median 0.250 [p10 0.050, p90 1.500], negatives' median 0.125; at a bound: "
        "3.0% of tau+, 25.0% of tau-; rank corr(s+, tau+) -0.50",
        "head 1 temperatures: tau+ median 0.500 [p10 0.100, p90 1.000], negatives' median 0.375; at a bound: "
        "0.0% of tau+, 25.0% of tau-; rank corr(s+, tau+) n/a",
        "training speed: 200 images/s (mean over 2 epochs, two views per image)",
    ]


def test_a_run_without_monitors_summarises_its_speed_only():
    plain = [{k: v for k, v in r.items() if k in ("epoch", "step", "loss", "lr", "images_per_s")} for r in RECORDS]
    assert run_summary(plain) == ["training speed: 200 images/s (mean over 2 epochs, two views per image)"]


def test_epoch_lines():
    assert epoch_line(RECORDS[0]) == "epoch 0 (untrained): knn_top1 20.50%"
    assert epoch_line(RECORDS[1]) == "epoch 1: loss 5.2500, 100 images/s, online linear top1 30.00%"
    assert epoch_line(RECORDS[2]) == "epoch 2: loss 5.0000, 300 images/s, knn_top1 42.12%, online linear top1 55.50%"


def test_per_head_values_come_back_by_name():
    end = RECORDS[2]
    assert head_values(end, "tau_pos_p50") == {0: 0.25, 1: 0.5}
    assert head_values(end, "rank_corr_s_tau") == {0: -0.5, 1: None}
    assert head_values(end, "tau_pos") == {}                 # tau_pos_p50_head0 is another field's
    assert heads(RECORDS, "tau_neg_p50") == [0, 1] and heads(RECORDS[:2], "tau_neg_p50") == []


def test_the_reader_skips_a_torn_line_and_the_cli_prints_the_summary(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + '{"epoch": 3, "lo')
    assert read_metrics(tmp_path) == RECORDS
    assert "metrics.jsonl line 4 is damaged" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 0 and capsys.readouterr().out.splitlines() == run_summary(RECORDS)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "none")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err
