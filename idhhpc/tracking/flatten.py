"""Job configs as MLflow params: nested keys flattened to ``train.lr`` style, values as strings."""

from __future__ import annotations

import json
from typing import Any, Mapping

try:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
except ImportError:  # the constant is internal to MLflow; 6000 is its documented limit
    MAX_PARAM_VAL_LENGTH = 6000


def param_value(value: Any) -> str:
    """A param value MLflow accepts: lists and tuples as JSON-like text, truncated to its limit."""
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_VAL_LENGTH]


def flatten_params(config: Mapping[str, Any], sep: str = ".") -> dict[str, str]:
    """Flatten a nested job config into ``{"train.lr": "0.001", ...}``.

    An empty nested mapping is kept as ``"{}"`` so that the logged params still show it was set.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            for sub_key, sub_value in flatten_params(value, sep).items():
                flat[f"{key}{sep}{sub_key}"] = sub_value
        elif isinstance(value, Mapping):
            flat[str(key)] = "{}"
        else:
            flat[str(key)] = param_value(value)
    return flat
