"""Telling a tracking outage (retry later) from a rejected request (retrying will not help)."""

from __future__ import annotations

import os
import time

import requests
from mlflow.exceptions import MlflowException

#: MLflow's HTTP defaults retry for minutes; a training job should instead spool and move on.
SHORT_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def use_short_http_settings() -> None:
    """Shorten MLflow's HTTP retries and timeout unless the user already set them."""
    for name, value in SHORT_HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)


def is_outage(error: BaseException) -> bool:
    """True for unreachable servers, timeouts and 5xx answers, anywhere in the exception chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_outage_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_outage_itself(error: BaseException) -> bool:
    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code >= 500
    if isinstance(error, requests.exceptions.RetryError):
        return True
    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500
    return False


class Backoff:
    """Exponential delay between reconnection attempts, so a dead server costs little per call."""

    def __init__(self, first_s: float = 1.0, max_s: float = 120.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._delay_s = 0.0
        self._next_try = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._next_try

    def failed(self) -> None:
        self._delay_s = min(self.max_s, max(self.first_s, 2 * self._delay_s))
        self._next_try = time.monotonic() + self._delay_s

    def reset(self) -> None:
        self._delay_s = 0.0
        self._next_try = 0.0
