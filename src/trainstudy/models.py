"""Models whose input and output sizes come from the data: an MLP, a small CNN, a linear model.

Every model is an ``nn.Sequential`` so diagnostics can walk it layer by layer; ``model.activation``
names its nonlinearity (kaiming's gain follows it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainstudy.errors import UserError
from trainstudy.inits import LEAKY_RELU_SLOPE, init_layers

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
    "gelu": nn.GELU,
}
MODELS = ("mlp", "cnn", "linear")
# The image shape of each dataset model=cnn takes: what counting its layers needs before the data loads.
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def validate_model(cfg: Mapping[str, Any]) -> None:
    """Check a model config before any data is loaded."""
    name = cfg.get("name")
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if name != "linear" and cfg.get("activation", "relu") not in ACTIVATIONS:
        raise UserError(f"unknown model.activation {cfg.get('activation')!r}; choose one of: {', '.join(ACTIVATIONS)}")
    for key in ("depth", "width"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (key == "width")):
            raise UserError(f"model.{key} must be a whole number >= {int(key == 'width')}, got {value!r}")


class Study(nn.Sequential):
    """nn.Sequential that remembers its activation's name."""

    def __init__(self, *layers: nn.Module, activation: str):
        super().__init__(*layers)
        self.activation = activation


def build_model(cfg: Mapping[str, Any], input_shape: tuple[int, ...], out_features: int) -> Study:
    """The model named by ``cfg.name`` for inputs of ``input_shape`` and ``out_features`` outputs."""
    validate_model(cfg)
    act = cfg.get("activation", "relu")
    if cfg["name"] == "linear":
        return Study(nn.Flatten(), nn.Linear(math.prod(input_shape), out_features), activation="linear")
    if cfg["name"] == "mlp":
        return mlp(math.prod(input_shape), out_features, cfg["depth"], cfg["width"], act)
    return cnn(input_shape, out_features, act, cfg.get("width") or 32)


def layer_count(cfg: Mapping[str, Any], data_name: str) -> int:
    """How many Linear/Conv layers (the layers an init strategy sets) the model has on this data, without it."""
    with torch.device("meta"):
        return sum(1 for _ in init_layers(build_model(cfg, IMAGE_SHAPES.get(data_name, (1,)), 1)))


def mlp(in_features: int, out_features: int, depth: int, width: int, activation: str) -> Study:
    """Flatten, then ``depth`` hidden layers of ``width`` units (Linear + activation), then a Linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(width if depth else in_features, out_features))
    return Study(*layers, activation=activation)


def cnn(input_shape: tuple[int, ...], out_features: int, activation: str, width: int = 32) -> Study:
    """LeNet-5-style for 1×28×28, a small VGG-style net (``width`` base channels) for 3×32×32."""
    act = ACTIVATIONS[activation]
    if tuple(input_shape) == (1, 28, 28):
        return Study(
            nn.Conv2d(1, 6, 5, padding=2), act(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, out_features),
            activation=activation)
    if tuple(input_shape) == (3, 32, 32):
        c = width
        return Study(
            nn.Conv2d(3, c, 3, padding=1), act(), nn.Conv2d(c, c, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), act(), nn.Conv2d(2 * c, 2 * c, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * c * 4 * 4, 256), act(), nn.Linear(256, out_features),
            activation=activation)
    raise UserError(f"model=cnn needs 1x28x28 or 3x32x32 images, this data is {'x'.join(map(str, input_shape))}; "
                    "use model=mlp or model=linear")
