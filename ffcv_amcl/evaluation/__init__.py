"""How good are the backbone features: kNN monitor (during training) and linear probe (eval.py)."""
from ffcv_amcl.evaluation.features import extract_features
from ffcv_amcl.evaluation.knn import knn_predict, knn_top1
from ffcv_amcl.evaluation.linear import linear_probe

__all__ = ["extract_features", "knn_predict", "knn_top1", "linear_probe"]
