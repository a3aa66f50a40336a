"""Training losses and the task-aligned label assigner."""

from .assigner import Assignment, TaskAlignedAssigner
from .seg_loss import DetectionLoss, SegmentationLoss

__all__ = ["Assignment", "DetectionLoss", "SegmentationLoss", "TaskAlignedAssigner"]
