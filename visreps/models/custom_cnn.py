"""CustomCNN: the study's AlexNet-style network (docs/method.md §2), and its width/resolution-scaled demo variant.

At the default settings (``CustomCNN(num_classes)``) the network is exactly the table of docs/method.md §2 for 224×224 input:

=======  ==========================================  =========  ===========  ===================
layer    operation                                   channels   k/s/p        output (224 input)
=======  ==========================================  =========  ===========  ===================
conv1    Conv (no bias) + BN + ReLU + MaxPool(3,2)   3→96       11/4/2       55×55 → 27×27
conv2    Conv + BN + ReLU + MaxPool(3,2)             96→256     5/1/2        27×27 → 13×13
conv3    Conv + BN + ReLU                            256→384    3/1/1        13×13
conv4    Conv + BN + ReLU                            384→384    3/1/1        13×13
conv5    Conv + BN + ReLU + MaxPool(3,2)             384→256    3/1/1        13×13 → 6×6
pool     AdaptiveAvgPool → 3×3, flatten              —          —            2304
fc1      Dropout + Linear + BN + ReLU                2304→4096
fc2      Dropout + Linear + BN + ReLU                4096→4096
output   Linear                                      4096→K
=======  ==========================================  =========  ===========  ===================

Initialisation: Kaiming-normal (fan_out, relu) for convolutions and the hidden linears (biases 0), BatchNorm
weight 1 / bias 0, output layer weights N(0, std = 1/√fan_in) with bias 0. Dropout p = 0.3.

``custom_cnn_small`` (``CustomCNN.small``) keeps the same nine layers and 14 extraction points for 64×64 images:
channels about 1/6 (16, 48, 64, 64, 48), hidden linears 512 wide, and conv1 5/2/2 instead of 11/4/2 so that the
feature maps keep roughly the same size relative to the image (64 → 32 → 15 → 7 → 3; 0.63 M parameters at K=64).
It is sized for the demo's time budget: about 650–850 training images/s on 2 CPU cores at batch 128
(benchmarks/README.md, "Training throughput").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from visreps.models.points import ExtractionPoint

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc1", "fc2")
#: conv layers followed by MaxPool(3, 2)
POOLED_LAYERS = ("conv1", "conv2", "conv5")


def _conv_block(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
                bias: bool, pool: bool) -> nn.Sequential:
    parts: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias)),
        ("bn", nn.BatchNorm2d(out_channels)),
        ("relu", nn.ReLU(inplace=True)),
    ]
    if pool:
        parts.append(("pool", nn.MaxPool2d(kernel_size=3, stride=2)))
    return nn.Sequential(OrderedDict(parts))


def _fc_block(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("dropout", nn.Dropout(dropout)),
        ("linear", nn.Linear(in_features, out_features)),
        ("bn", nn.BatchNorm1d(out_features)),
        ("relu", nn.ReLU(inplace=True)),
    ]))


class CustomCNN(nn.Module):
    """AlexNet-style CNN of docs/method.md §2 (see the module docstring); ``forward(x)`` returns logits (B, num_classes).

    ``channels``: output channels of conv1..conv5; ``hidden``: width of fc1/fc2; ``conv1_geometry``:
    (kernel, stride, padding) of conv1; ``pooled_size``: side of the adaptive average pool before fc1.
    """

    def __init__(
        self,
        num_classes: int,
        channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256),
        hidden: int = 4096,
        conv1_geometry: tuple[int, int, int] = (11, 4, 2),
        pooled_size: int = 3,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"CustomCNN needs 5 conv channel counts, got {channels}")
        self.num_classes = int(num_classes)
        kernel, stride, padding = conv1_geometry
        c1, c2, c3, c4, c5 = (int(c) for c in channels)
        self.conv1 = _conv_block(3, c1, kernel, stride, padding, bias=False, pool=True)
        self.conv2 = _conv_block(c1, c2, 5, 1, 2, bias=True, pool=True)
        self.conv3 = _conv_block(c2, c3, 3, 1, 1, bias=True, pool=False)
        self.conv4 = _conv_block(c3, c4, 3, 1, 1, bias=True, pool=False)
        self.conv5 = _conv_block(c4, c5, 3, 1, 1, bias=True, pool=True)
        self.avgpool = nn.AdaptiveAvgPool2d(pooled_size)
        self.fc1 = _fc_block(c5 * pooled_size * pooled_size, hidden, dropout)
        self.fc2 = _fc_block(hidden, hidden, dropout)
        self.output = nn.Linear(hidden, num_classes)
        self.reset_parameters()

    @classmethod
    def small(cls, num_classes: int, dropout: float = 0.3) -> "CustomCNN":
        """The width/resolution-scaled variant for 64×64 images (``custom_cnn_small``)."""
        return cls(num_classes, channels=(16, 48, 64, 64, 48), hidden=512, conv1_geometry=(5, 2, 2),
                   dropout=dropout)

    def reset_parameters(self) -> None:
        """The study's initialisation (docs/method.md §2; see the module docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                if module is self.output:
                    nn.init.normal_(module.weight, mean=0.0, std=module.in_features ** -0.5)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.output(self.fc2(self.fc1(x)))

    def extraction_spec(self) -> list[ExtractionPoint]:
        """The 14 points of docs/method.md §3: ``<layer>_pre`` (Conv/Linear output), ``<layer>_post`` (after BN+ReLU)."""
        points: list[ExtractionPoint] = []
        for layer in CONV_LAYERS:
            points.append(ExtractionPoint(f"{layer}_pre", f"{layer}.conv"))
            points.append(ExtractionPoint(f"{layer}_post", f"{layer}.relu"))
        for layer in FC_LAYERS:
            points.append(ExtractionPoint(f"{layer}_pre", f"{layer}.linear"))
            points.append(ExtractionPoint(f"{layer}_post", f"{layer}.relu"))
        return points
