"""Run monitoring: what a training records each epoch and where the records go.

  names.py      the metrics.jsonl field names and the per-head helpers (the one definition of them)
  metrics.py    metrics.jsonl: the writer (MetricsLog, feeding the sinks) and the one reader (read_metrics)
  sinks.py      TensorBoard and wandb, optional, imported only when switched on
  epoch.py      EpochStats: one epoch's losses, per-head means and monitors, reduced into its record
  nonfinite.py  the non-finite loss check
  health.py     AMCL temperature health (histograms of the pair temperatures), a registered monitor
  separation.py positive/negative pair separation per head (overlap, positives below 0.5), a registered monitor
  collapse.py   collapse monitors at kNN epochs (RankMe of the features, std of the normalised projections)
  registry.py   the monitors a training runs: a new monitor is one module and one line there
  summary.py    records in words: the per-epoch line and a run's summary (python -m ffcv_amcl.monitoring.summary)
"""
