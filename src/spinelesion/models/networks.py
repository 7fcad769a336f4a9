"""Networks: a backbone over the multi-sequence ROI, the availability flags, and one head per task.

Networks are built by *name* from a registry, never from a class path stored in a file, so
a model folder or checkpoint from elsewhere cannot make the loader import or run anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from spinelesion.labels import SEQUENCES, TASKS


def _triple(v: Sequence[int] | int) -> int | tuple[int, int, int]:
    if isinstance(v, int):
        return v
    a, b, c = (int(x) for x in v)
    return a, b, c


class ResBlock3d(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected) skip, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: Sequence[int] | int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=_triple(stride), padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        needs_proj = cin != cout or any(s != 1 for s in ([stride] * 3 if isinstance(stride, int) else stride))
        self.skip = (
            nn.Sequential(nn.Conv3d(cin, cout, 1, stride=_triple(stride), bias=False), nn.BatchNorm3d(cout))
            if needs_proj
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.skip(x))


class SpineCNN(nn.Module):
    """Small residual 3D CNN; the project's default backbone.

    A strided stem takes the 1.5 mm ROI to 3 mm at once (the sagittal source slices are
    3-5 mm thick, so little is lost across the patient), then each stage halves all three
    axes. Cheap enough to train on two CPU cores. Global average and max pooling are
    concatenated: the mean carries the diffuse signal (whole-body marrow replacement), the
    max the small focal one (an enhancing nodule, a fluid cleft).
    """

    def __init__(
        self,
        in_channels: int = len(SEQUENCES),
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_stride: Sequence[int] = (2, 2, 2),
    ):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, w0, 3, stride=_triple(stem_stride), padding=1, bias=False),
            nn.BatchNorm3d(w0),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = w0
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(ResBlock3d(cin, w, stride))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.out_features = 2 * cin
        # Named stages -> submodule paths (the last block of each stage; blocks are one flat
        # Sequential so that weight names stay those of the released model).
        ends = [sum(blocks[: i + 1]) - 1 for i in range(len(blocks))]
        self.stages = {
            "stem": "stem",
            **{f"stage{i + 1}": f"layers.{e}" for i, e in enumerate(ends) if blocks[i]},
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)


class _MonaiBackbone(nn.Module):
    """A MONAI classification network with its classifier removed: features only."""

    def __init__(self, net: nn.Module, out_features: int, stages: dict[str, str]):
        super().__init__()
        self.net = net
        self.out_features = out_features
        self.stages = {name: f"net.{path}" for name, path in stages.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _densenet121(in_channels: int = len(SEQUENCES), dropout: float = 0.0) -> nn.Module:
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=1, dropout_prob=dropout)
    features = int(cast(nn.Linear, net.class_layers.out).in_features)
    net.class_layers.out = nn.Identity()
    return _MonaiBackbone(
        net,
        features,
        {"stem": "features.conv0", **{f"stage{i}": f"features.denseblock{i}" for i in range(1, 5)}},
    )


def _resnet(
    in_channels: int = len(SEQUENCES), depth: int = 18, widths: Sequence[int] = (64, 128, 256, 512)
) -> nn.Module:
    from monai.networks.nets import ResNet
    from monai.networks.nets.resnet import ResNetBlock, get_inplanes

    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]
    net = ResNet(
        ResNetBlock,
        layers,
        list(widths) or get_inplanes(),
        spatial_dims=3,
        n_input_channels=in_channels,
        conv1_t_stride=(1, 2, 2),  # type: ignore[arg-type]  # MONAI annotates tuple[int] for a per-axis tuple
        feed_forward=False,
        shortcut_type="B",
    )
    return _MonaiBackbone(
        net, int(widths[-1]), {"stem": "conv1", **{f"stage{i}": f"layer{i}" for i in range(1, 5)}}
    )


@dataclass(frozen=True)
class Backbone:
    """A registry entry: how to build the backbone and which of its named stages
    (``backbone.stages``: name -> submodule path) saliency maps are taken from by default:
    the third stage, fine enough for a vertebra's parts, deep enough to be about the lesion."""

    build: Callable[..., nn.Module]
    saliency_stage: str = "stage3"


BACKBONES: dict[str, Backbone] = {
    "spinecnn": Backbone(SpineCNN),
    "densenet121": Backbone(_densenet121),
    "resnet": Backbone(_resnet),
}

# Former registry names, kept so model folders and checkpoints written before a rename
# still load. "spinenet" was renamed: it is also a published spine MRI tool and a
# detection backbone, and a model card reader would confuse them.
BACKBONE_ALIASES: dict[str, str] = {"spinenet": "spinecnn"}


def canonical_backbone(name: str) -> str:
    """The registry name for ``name``, resolving former names through :data:`BACKBONE_ALIASES`."""
    return BACKBONE_ALIASES.get(name, name)


class MultiTaskNet(nn.Module):
    """Backbone features + sequence-availability flags -> one logit vector per task.

    ``forward(image, available)`` returns a tuple of logits in :data:`TASKS` order (a tuple
    rather than a dict so TorchScript and ONNX export it as is). ``temperature`` (one per
    task, fitted on validation data after training) is stored with the weights and applied
    only by :meth:`probabilities`, never in training.
    """

    temperature: torch.Tensor  # a registered buffer (one per task)
    __jit_unused_properties__ = ["saliency_layer"]  # not compiled if the network is ever scripted

    def __init__(
        self,
        backbone: str = "spinecnn",
        hidden: int = 128,
        dropout: float = 0.2,
        in_channels: int = len(SEQUENCES),
        **backbone_kwargs: object,
    ):
        super().__init__()
        backbone = canonical_backbone(backbone)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone '{backbone}'; known: {', '.join(BACKBONES)}")
        self.backbone_name = backbone
        self.backbone = BACKBONES[backbone].build(in_channels=in_channels, **backbone_kwargs)
        features = int(cast(Any, self.backbone).out_features) + in_channels
        self.heads = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(features, hidden),
                    nn.ReLU(inplace=True),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, len(classes)),
                )
                for classes in TASKS.values()
            ]
        )
        self.register_buffer("temperature", torch.ones(len(TASKS)))

    def stage_paths(self) -> dict[str, str]:
        """The backbone's named stages as submodule paths of this network (``get_submodule``)."""
        stages: dict[str, str] = getattr(self.backbone, "stages", {})
        return {name: f"backbone.{path}" for name, path in stages.items()}

    @property
    def saliency_layer(self) -> str:
        """The default saliency layer: the registry's stage for this backbone, as a submodule path."""
        stage = BACKBONES[self.backbone_name].saliency_stage
        paths = self.stage_paths()
        if stage not in paths:
            raise ValueError(
                f"backbone '{self.backbone_name}' has no stage '{stage}' (stages: {', '.join(paths)})"
            )
        return paths[stage]

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = torch.cat([self.backbone(image), available.to(image.dtype)], dim=1)
        return tuple(head(feats) for head in self.heads)

    def probabilities(self, image: torch.Tensor, available: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(TASKS, tempered_softmax(self(image, available), self.temperature), strict=True))


def tempered_softmax(logits: Sequence[torch.Tensor], temperatures: torch.Tensor) -> list[torch.Tensor]:
    """Calibrated probabilities per task: softmax(logits / T) in float32, T the task's temperature.
    The one place logits meet their temperatures (predict, scan, the bundle)."""
    return [torch.softmax(lg.float() / temperatures[i].to(lg.device), 1) for i, lg in enumerate(logits)]


def build_network(config: dict[str, object]) -> MultiTaskNet:
    """A :class:`MultiTaskNet` from a plain config dict (``backbone`` name plus keyword args)."""
    cfg: dict[str, Any] = dict(config)
    return MultiTaskNet(**cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
