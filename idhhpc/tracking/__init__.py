"""MLflow tracking for idhhpc: a local default store, flattened params, outage-proof logging."""

from idhhpc.tracking.flatten import flatten_params
from idhhpc.tracking.tracker import RunHandle, Tracker
from idhhpc.tracking.uris import default_tracking_uri

__all__ = ["RunHandle", "Tracker", "default_tracking_uri", "flatten_params"]
