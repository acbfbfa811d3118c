from idhhpc.tracking.flatten import MAX_PARAM_VAL_LENGTH, flatten_params


def test_nested_keys_are_joined_and_values_become_strings():
    config = {"train": {"lr": 1e-3, "epochs": 2, "amp": True}, "model": {"name": "b0"}, "seed": 7}
    assert flatten_params(config) == {
        "train.lr": "0.001",
        "train.epochs": "2",
        "train.amp": "True",
        "model.name": "b0",
        "seed": "7",
    }


def test_lists_become_strings_and_separator_is_configurable():
    flat = flatten_params({"data": {"sequences": ["FLAIR", "T1"], "shape": (16, 16, 16)}}, sep="/")
    assert flat == {"data/sequences": '["FLAIR", "T1"]', "data/shape": "[16, 16, 16]"}


def test_deep_nesting_empty_mapping_and_none():
    flat = flatten_params({"a": {"b": {"c": None}}, "empty": {}})
    assert flat == {"a.b.c": "None", "empty": "{}"}


def test_long_values_are_truncated_to_mlflow_limit():
    flat = flatten_params({"notes": "x" * (MAX_PARAM_VAL_LENGTH + 50)})
    assert len(flat["notes"]) == MAX_PARAM_VAL_LENGTH
