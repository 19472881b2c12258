"""Which .beton each evaluation of a training run reads, and the refusal of an unlabelled one before any work.

The kNN monitor votes with the features of `data.eval_train_dataset` (default: the training set) and scores
`data.val_dataset`; the online probe learns from the labels of the training views themselves and scores
`data.val_dataset`. Pretraining on an unlabelled set (data/labels.py) therefore needs a labelled
`data.eval_train_dataset` for the kNN monitor, and the online probe switched off.
"""
from __future__ import annotations

from ffcv_amcl.data.labels import require_labelled


def knn_train_path(data) -> str:
    """The .beton whose features and labels the kNN monitor votes with."""
    return data.eval_train_dataset or data.train_dataset


def check_evaluation_splits(cfg) -> None:
    """UserError (one line) when an evaluation the run makes would read an unlabelled set."""
    d, ev = cfg.data, cfg.eval
    knn, probe = ev.knn_every > 0, bool(ev.online_linear)
    if not d.val_dataset or not (knn or probe):
        return
    require_labelled(d.val_dataset, "data.val_dataset", "the kNN monitor and the online probe score labels; "
                                                        "give a labelled .beton as --data.val_dataset")
    if knn:
        key = "data.eval_train_dataset" if d.eval_train_dataset else "data.train_dataset"
        require_labelled(knn_train_path(d), key, "the kNN monitor votes with labels; set --data.eval_train_dataset="
                                                 "a labelled .beton, or --eval.knn_every=0")
    if probe:
        require_labelled(d.train_dataset, "data.train_dataset", "the online probe learns from the training views' "
                                                                "labels; set --eval.online_linear=0")
