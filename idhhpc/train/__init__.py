"""idhhpc.train: the training engine (focal loss, balanced sampling, AMP, accumulation, exact resume)."""

from idhhpc.train.stopping import StopRequest, TrainingInterrupted, request_stop
from idhhpc.train.trainer import TrainResult, train

__all__ = ["StopRequest", "TrainResult", "TrainingInterrupted", "request_stop", "train"]
