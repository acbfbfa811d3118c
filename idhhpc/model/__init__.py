"""idhhpc.model: the 3D EfficientNet, its freezing, ImageNet inflation and memory accounting."""

from idhhpc.model.inflate import inflate_2d_state_dict, load_pretrained_2d
from idhhpc.model.initialisation import (
    Initialisation,
    describe_initialisation,
    resolve_initialisation,
)
from idhhpc.model.network import (
    VARIANTS,
    IDHNet,
    build_model,
    build_network,
    variant_name,
)
from idhhpc.model.parameters import (
    count_parameters,
    parameter_groups,
    trainable_parameters,
)

__all__ = [
    "VARIANTS",
    "IDHNet",
    "Initialisation",
    "build_model",
    "build_network",
    "count_parameters",
    "describe_initialisation",
    "inflate_2d_state_dict",
    "load_pretrained_2d",
    "parameter_groups",
    "resolve_initialisation",
    "trainable_parameters",
    "variant_name",
]
