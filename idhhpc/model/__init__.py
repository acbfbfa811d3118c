"""idhhpc.model: the 3D EfficientNet, its freezing, ImageNet inflation and memory planning."""

from idhhpc.model.inflate import inflate_2d_state_dict, load_pretrained_2d
from idhhpc.model.network import VARIANTS, IDHNet, build_model, variant_name
from idhhpc.model.params import count_parameters, default_cam_layer, parameter_groups, trainable_parameters

__all__ = [
    "VARIANTS",
    "IDHNet",
    "build_model",
    "count_parameters",
    "default_cam_layer",
    "inflate_2d_state_dict",
    "load_pretrained_2d",
    "parameter_groups",
    "trainable_parameters",
    "variant_name",
]
