"""Comparisons as a command: a plan of variants x grid points x datasets x seeds, each run a normal training in its
own folder, then one table with paired differences and verdicts (python -m ffcv_amcl.compare; ffcv-amcl-compare).

  plan.py      the plan: read it, check its keys and names, expand variants x grid into arms
  expand.py    the runs (RunSpec): one per (dataset, arm, seed), resolved and checked by the trainer's validation
  launch.py    a run's process: its command line (torchrun for several GPUs) and its slot of cores and GPUs
  attempt.py   one attempt at a run: started with its log, outcome.json recorded; a run's state from its folder
  local.py     runs on this machine, N at once, signals passed on
  submit.py    runs as submitit jobs (Slurm, or submitit's local executor), checkpointable
  signals.py   SIGINT/SIGTERM to the command: remembered while the runs save
  progress.py  the tqdm bar over runs
  results.py   what a run folder says about its run (metric, minutes, images/s, health, separation, collapse)
  stats.py     mean and std over seeds, paired differences with Student t intervals and verdicts
  table.py     the table (table.md, results.csv, results.json); python -m ffcv_amcl.compare.table RESULTS.json
  figures.py   compare.png (means with error bars) and curves.png (the metric over epochs)
  command.py   the command line
"""
