"""Evaluation: protocol metrics, full-ranking evaluation with masking, and the two baselines."""
from engine.eval.baselines import evaluate_with_baselines, item_knn_score_fn, popularity_score_fn
from engine.eval.evaluate import embedding_score_fn, evaluate_scores
from engine.eval.metrics import MetricAccumulator, per_owner_metrics

__all__ = [
    "MetricAccumulator", "embedding_score_fn", "evaluate_scores", "evaluate_with_baselines",
    "item_knn_score_fn", "per_owner_metrics", "popularity_score_fn",
]
