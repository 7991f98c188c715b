"""Segmentation and salient-object metrics."""
from salmask.metrics.confusion import ConfusionMatrix, score_folders

__all__ = ["ConfusionMatrix", "score_folders"]
