"""A run's records in words: the line the trainer prints after each epoch, and the summary of a whole run.

    python -m ffcv_amcl.monitoring.summary RUN_FOLDER

prints the kNN monitor before and after training, the online probe's last top-1, AMCL's temperature health per
head in the last epoch, and the mean training speed (the quickstart prints these).
"""
from __future__ import annotations

from ffcv_amcl.errors import ArgumentParser, check, cli
from ffcv_amcl.monitoring.metrics import read_metrics
from ffcv_amcl.monitoring.names import (EPOCH, IMAGES_PER_S, KINDS, KNN_TOP1, LOSS, ONLINE_LINEAR_TOP1, RANK_CORR,
                                        TAU_STATS, head_field, heads, tau_stat)


def epoch_line(record: dict) -> str:
    """'epoch N: loss L, R images/s[, knn_top1 K%][, online linear top1 P%]'; for epoch 0 (untrained) only kNN."""
    knn, probe = record.get(KNN_TOP1), record.get(ONLINE_LINEAR_TOP1)
    if record[LOSS] is None:
        return f"epoch {record[EPOCH]} (untrained): knn_top1 {knn:.2f}%"
    return (f"epoch {record[EPOCH]}: loss {record[LOSS]:.4f}, {record[IMAGES_PER_S]:.0f} images/s"
            + (f", knn_top1 {knn:.2f}%" if knn is not None else "")
            + (f", online linear top1 {probe:.2f}%" if probe is not None else ""))


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def health_line(end: dict, c: int) -> str:
    """Head c's temperatures in the record `end`: adapting, or stuck at a bound?"""
    v = {(kind, name): end.get(head_field(tau_stat(kind, name), c)) for kind in KINDS for name in TAU_STATS}
    at = {kind: None if None in (v[kind, "at_min"], v[kind, "at_max"]) else v[kind, "at_min"] + v[kind, "at_max"]
          for kind in KINDS}
    return (f"head {c} temperatures: tau+ median {_num(v['pos', 'p50'], '.3f')} [p10 {_num(v['pos', 'p10'], '.3f')}, "
            f"p90 {_num(v['pos', 'p90'], '.3f')}], negatives' median {_num(v['neg', 'p50'], '.3f')}; at a bound: "
            f"{_num(at['pos'], '.1%')} of tau+, {_num(at['neg'], '.1%')} of tau-; rank corr(s+, tau+) "
            f"{_num(end.get(head_field(RANK_CORR, c)), '+.2f')}")


def run_summary(records: list[dict]) -> list[str]:
    """The summary lines of a run's records (those its records have what they need for)."""
    lines, end = [], records[-1]
    knn = [r for r in records if KNN_TOP1 in r]
    first = records[0].get(KNN_TOP1)
    if first is not None:
        lines.append(f"kNN top-1 before training (epoch 0, untrained network): {first:.2f}%")
    if knn and knn[-1] is not records[0]:
        last = knn[-1]
        gain = f" ({last[KNN_TOP1] - first:+.2f} points)" if first is not None else ""
        lines.append(f"kNN top-1 after {last[EPOCH]} epochs: {last[KNN_TOP1]:.2f}%{gain}")
    if ONLINE_LINEAR_TOP1 in end:
        lines.append(f"online linear probe top-1 after {end[EPOCH]} epochs: {end[ONLINE_LINEAR_TOP1]:.2f}%")
    lines += [health_line(end, c) for c in heads([end], tau_stat("pos", "p50"))]
    speeds = [r[IMAGES_PER_S] for r in records if r.get(IMAGES_PER_S)]
    if speeds:
        lines.append(f"training speed: {sum(speeds) / len(speeds):.0f} images/s (mean over {len(speeds)} epochs, "
                     f"two views per image)")
    return lines


@cli
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m ffcv_amcl.monitoring.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder (a training's logging.folder)")
    a = ap.parse_args(argv)
    records = read_metrics(a.run)
    check(bool(records), f"{a.run} holds no metrics.jsonl record: point it at a training's logging.folder")
    for line in run_summary(records):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    main()
