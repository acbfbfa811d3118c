import os

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from idhhpc.tracking.outage import (
    SHORT_HTTP_SETTINGS,
    Backoff,
    is_outage,
    use_short_http_settings,
)


def _wrapped_connection_error() -> MlflowException:
    try:
        try:
            raise requests.ConnectionError("refused")
        except Exception as inner:
            raise MlflowException(f"API request to http://x failed with exception {inner}")
    except MlflowException as outer:
        return outer


def test_connection_errors_and_5xx_are_outages():
    assert is_outage(_wrapped_connection_error())
    assert is_outage(requests.Timeout("slow"))
    assert is_outage(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}))
    response = requests.Response()
    response.status_code = 503
    assert is_outage(requests.HTTPError("503", response=response))


def test_rejected_requests_are_not_outages():
    assert not is_outage(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}))
    assert not is_outage(ValueError("bad value"))
    assert not is_outage(FileNotFoundError("missing.png"))


def test_backoff_waits_longer_after_each_failure_and_resets():
    backoff = Backoff(first_s=100.0, max_s=1000.0)
    assert backoff.ready()
    backoff.failed()
    assert not backoff.ready()
    backoff.failed()
    assert backoff._delay_s == pytest.approx(200.0)
    backoff.reset()
    assert backoff.ready()


def test_short_http_settings_keep_user_choices(monkeypatch):
    for name in SHORT_HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    use_short_http_settings()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == SHORT_HTTP_SETTINGS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
