"""3D Grad-CAM / Grad-CAM++ for one volume, built on MONAI's ``monai.visualize`` classes.

The training models freeze their stem and early stages (``requires_grad=False``, sometimes run
under ``torch.no_grad``), so a plain backward pass may never reach the explained layer. A forward
pre-hook turns the target layer's input into a detached gradient leaf: backward then stops at the
target (Grad-CAM needs nothing earlier) and works even when no parameter requires grad. Only when
the target layer itself runs under ``no_grad`` do we enter the model's ``explain_mode()`` and
repeat the pass, because that mode keeps the whole prefix's graph and costs gigabytes at 128³.
Every hook we or MONAI add is removed afterwards, so explaining many cases neither leaks hooks
nor keeps activations alive.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp
from torch import Tensor, nn

from idhhpc.predictor import prob_mutant

HEAD_LAYER = "net._conv_head"
CamMethod = Literal["gradcam", "gradcam++"]
_CAM_CLASSES = {"gradcam": GradCAM, "gradcam++": GradCAMpp}


class ZeroCamWarning(UserWarning):
    """The class score had no positive gradient-weighted evidence at the target layer."""


@dataclass(frozen=True)
class CamResult:
    cam: np.ndarray
    prob_mutant: float
    class_index: int


def compute_cam(
    model: nn.Module,
    image: Tensor,
    target_layer: str,
    class_index: int | None = None,
    method: CamMethod = "gradcam",
) -> CamResult:
    """Explain ``class_index`` (default: the arg-max class) for one image of shape (C, D, H, W).

    Returns the CAM upsampled to (D, H, W), float32 scaled to [0, 1] by its maximum (so 0 keeps
    meaning "no evidence", which the CAM-in-tumor energies rely on), the mutant probability of
    the same forward pass, and the class that was explained. The model's train/eval mode,
    ``requires_grad`` flags and hooks are as before afterwards; existing ``.grad`` tensors are
    cleared (MONAI calls ``model.zero_grad()``), so do not explain in the middle of a training step.
    """
    if method not in _CAM_CLASSES:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {sorted(_CAM_CLASSES)}")
    if image.ndim != 4:
        raise ValueError(f"image must be (C, D, H, W), got shape {tuple(image.shape)}")
    batch = torch.as_tensor(image, dtype=torch.float32, device=_model_device(model))[None]
    try:
        raw, logits = _run_cam(model, batch, target_layer, class_index, method, contextlib.nullcontext())
    except _TargetRanWithoutGrad:
        if not hasattr(model, "explain_mode"):
            raise RuntimeError(f"layer {target_layer!r} runs under no_grad and {type(model).__name__} "
                               "has no explain_mode() to open the graph; pick a later layer") from None
        raw, logits = _run_cam(model, batch, target_layer, class_index, method, model.explain_mode())
    chosen = int(logits.argmax(1).item()) if class_index is None else int(class_index)
    return CamResult(_normalise(raw[0, 0]), _first_prob_mutant(logits), chosen)


class _TargetRanWithoutGrad(RuntimeError):
    """Raised from the forward hook to abort a pass whose target layer cannot get gradients."""


def _run_cam(model: nn.Module, batch: Tensor, target_layer: str, class_index: int | None, method: CamMethod,
             mode: contextlib.AbstractContextManager) -> tuple[Tensor, Tensor]:
    layer = _find_layer(model, target_layer)
    logits: dict[str, Tensor] = {}
    with _temporary_hooks(model, layer) as handles, mode, torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        handles.append(layer.register_forward_pre_hook(_cut_graph_before_layer))
        handles.append(model.register_forward_hook(lambda _m, _i, out: logits.__setitem__("out", out.detach())))
        cam_method = _CAM_CLASSES[method](nn_module=model, target_layers=target_layer, postprocessing=_identity)
        raw = cam_method(x=batch, class_idx=class_index)
    return raw, logits["out"]


def _find_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n.endswith(name.rsplit(".", 1)[-1])][:5]
        raise KeyError(f"target layer {name!r} not found in {type(model).__name__}; similar: {close}")
    return modules[name]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _identity(x: Tensor) -> Tensor:
    return x


def _cut_graph_before_layer(_module: nn.Module, args: tuple) -> tuple:
    """Make the target's inputs gradient leaves, so backward reaches it and goes no further.

    Cutting before the layer (not after) keeps MONAI's full backward hook on the layer working:
    that hook fires once the gradient of the layer's inputs is known.
    """
    if not torch.is_grad_enabled():
        raise _TargetRanWithoutGrad
    return tuple(a.detach().requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a
                 for a in args)


@contextlib.contextmanager
def _temporary_hooks(model: nn.Module, layer: nn.Module) -> Iterator[list]:
    """Remove our hook handles and the (handle-less) hooks MONAI's ModelWithHooks registers.

    Also restores the train/eval mode, which MONAI does not when the forward pass raises.
    """
    was_training = model.training
    hook_dicts = [layer._forward_hooks, layer._backward_hooks, model._forward_hooks]
    before = [set(d) for d in hook_dicts]
    was_full_backward = layer._is_full_backward_hook
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        for hooks, keep in zip(hook_dicts, before):
            for key in set(hooks) - keep:
                del hooks[key]
        layer._is_full_backward_hook = was_full_backward
        model.train(was_training)


def _normalise(raw: Tensor) -> np.ndarray:
    cam = np.nan_to_num(raw.detach().float().cpu().numpy(), nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.clip(cam, 0.0, None)
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0:
        warnings.warn("Grad-CAM is zero everywhere (no positive gradient evidence); returning zeros",
                      ZeroCamWarning, stacklevel=3)
        return np.zeros(cam.shape, dtype=np.float32)
    return (cam / peak).astype(np.float32)


def _first_prob_mutant(logits: Tensor) -> float:
    return float(prob_mutant(logits)[0].item())


def default_cam_layer(model: nn.Module) -> str:
    """The head convolution: the last layer that still has a spatial map."""
    if HEAD_LAYER not in dict(model.named_modules()):
        raise ValueError(f"model has no module {HEAD_LAYER!r}; expected an IDHNet")
    return HEAD_LAYER
