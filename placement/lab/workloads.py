"""The workload zoo: the models of papers A and B in plain torch, and how any model is described.

Models (no torchvision), each as inference (forward under ``inference_mode``) and as a
training step (forward, cross-entropy, backward, SGD-with-momentum step):

==============  ==============  ==================================================================
model           family          architecture
==============  ==============  ==================================================================
``mlp``         mlp             paper B's "DNN": flatten -> 1024 -> 512 -> classes, ReLU
``alexnet``     cnn             AlexNet (5 conv + 3 FC). Inputs >= 64 px use the original stem
                                (11x11/4, 6x6 adaptive pool, 9216-4096-4096 head); smaller inputs
                                the usual CIFAR variant (3x3/2 stem, 256x2x2-4096-4096 head)
``mobilenet``   cnn             MobileNet v1 (13 depthwise-separable blocks, width 1.0)
``resnet18``    cnn             ResNet-18 (BasicBlock [2, 2, 2, 2], 7x7/2 stem + max-pool)
``lstm``        rnn             text classifier: embedding 64 -> LSTM 128 -> last state -> classes
``gru``         rnn             as ``lstm`` with a GRU
``transformer`` transformer     BERT-like encoder: embedding 128 + learned positions, 2 layers,
                                4 heads, FFN 512, mean pooling -> classes
``lenet``       cnn             LeNet-5: conv 5x5 6 -> pool -> conv 5x5 16 -> pool -> 120 -> 84
``vgg11``       cnn             VGG-11 with batch norm, CIFAR head (512 -> classes)
``textcnn``     cnn             Kim's sentence CNN: embedding 128, 1-d convolutions of width 3, 4
                                and 5 (100 filters each), max over time -> classes
``fasttext``    embedding       fastText classifier: mean of 64-d word embeddings -> classes
==============  ==============  ==================================================================

Inputs (:data:`DATASETS`): ``cifar10`` (3x32x32 float32, 10 classes), ``imagenet100``
(3x224x224 float32, 100 classes, paper A's ImageNet-100), ``imdb`` (128 int64 token ids
from a 20 000-word vocabulary, 2 classes) and ``covtype`` (54 float32 features, 7 classes:
tabular, MLP only). Zoo names are ``<model>_<dataset>``. The first seven models are the
sweep of ``data/traces/h200_measured.parquet``; the last four and ``mlp_covtype`` were added
for the second sweep (``h200_pairs_measured.parquet``), so that whole architectures, and a
family (embedding), can be held out.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the ``meta``
device: no memory is allocated and nothing runs, and recurrent layers decompose into the
matrix products the counter sees (on CPU and CUDA the fused LSTM/GRU kernels count as 0).
A training step's count is forward + backward as counted, plus the optimizer's
element-wise work (:data:`OPTIMIZER_FLOPS_PER_PARAM` per parameter). Multiply-adds count
as 2 FLOPs. The counter's own formula for a convolution's backward treats a grouped
(depthwise) convolution's weight gradient as a full one (10x too many FLOPs for
MobileNet); :func:`_conv_backward_flops` replaces it: each gradient costs what the
forward convolution costs.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from placement.core.job import FAMILIES, MODES, Family, Job

OPTIMIZER_FLOPS_PER_PARAM = 4
"""SGD with momentum and weight decay: about 4 element-wise FLOPs per parameter per step."""


@dataclass(frozen=True)
class Dataset:
    """Shape of one input sample. ``vocab_size`` > 0 means integer token ids."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str
    num_classes: int
    vocab_size: int = 0

    @property
    def torch_dtype(self) -> torch.dtype:
        """The sample's torch dtype."""
        return _DTYPES[self.dtype]

    @property
    def elems_per_sample(self) -> int:
        """Elements in one sample (product of ``sample_shape``)."""
        return math.prod(self.sample_shape)


_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
}

DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset("cifar10", (3, 32, 32), "float32", 10),
    "imagenet100": Dataset("imagenet100", (3, 224, 224), "float32", 100),
    "imdb": Dataset("imdb", (128,), "int64", 2, vocab_size=20_000),
    "covtype": Dataset("covtype", (54,), "float32", 7),
    "speech": Dataset("speech", (1, 8000), "float32", 12),
    "criteo": Dataset("criteo", (26,), "int64", 2, vocab_size=4_000),
    "graph": Dataset("graph", (64, 32), "float32", 4),
    "tinytext": Dataset("tinytext", (128,), "int64", 4_096, vocab_size=4_096),
}


# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    """Paper B's DNN: two hidden layers of 1024 and 512 units."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (1024, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of inputs ``x`` ``(B, ...)``, flattened per sample."""
        return self.net(x)


class AlexNet(nn.Module):
    """AlexNet; the stem and head follow the input size (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_px: int = 224) -> None:
        super().__init__()
        if image_px >= 64:
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            )
            self.pool: nn.Module = nn.AdaptiveAvgPool2d((6, 6))
            flat = 256 * 6 * 6
        else:
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            )
            self.pool = nn.AdaptiveAvgPool2d((2, 2))
            flat = 256 * 2 * 2
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(flat, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _conv_bn(cin: int, cout: int, stride: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet v1 (Howard et al. 2017), width multiplier 1.0."""

    _BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
               (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 2)]
        width = 32
        for out, stride in self._BLOCKS:
            layers += [_conv_bn(width, width, stride, groups=width), _conv_bn(width, out, 1, kernel=1)]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: features, global average
        pool, linear head."""
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class BasicBlock(nn.Module):
    """ResNet's basic residual block: two 3x3 conv + batch-norm layers, with a 1x1 projection on the
    shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; ``(B, cout, H/stride, W/stride)``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.down(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with the standard ImageNet stem for every input size."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1),
        )
        blocks: list[nn.Module] = []
        width = 64
        for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(width, out, stride), BasicBlock(out, out, 1)]
            width = out
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: stem, four residual
        stages, global average pool, linear head."""
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class RecurrentClassifier(nn.Module):
    """Embedding -> one-layer LSTM or GRU -> last hidden state -> classes (paper B's IMDB models)."""

    def __init__(self, cell: str, vocab_size: int, num_classes: int, embed: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of token ids ``tokens`` ``(B, T)``, from the recurrent
        layer's last time step."""
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[:, -1])


class TransformerClassifier(nn.Module):
    """A small BERT-like encoder: learned positions, post-norm layers, mean pooling."""

    def __init__(self, vocab_size: int, num_classes: int, seq_len: int, d_model: int = 128,
                 heads: int = 4, ffn: int = 512, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of token ids ``tokens`` ``(B, T)``: embeddings plus
        positions, encoder, mean over tokens, linear head."""
        x = self.encoder(self.embed(tokens) + self.pos[:, : tokens.shape[1]])
        return self.head(x.mean(dim=1))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, for 32x32 inputs."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``."""
        return self.classifier(self.features(x))


class VGG11(nn.Module):
    """VGG-11 (Simonyan and Zisserman 2015, configuration A) with batch norm and the usual
    CIFAR head: 512 features after five poolings of a 32x32 input -> classes."""

    _CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(width, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                width = int(v)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: conv stages, global
        average pool, classifier."""
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.head(torch.flatten(x, 1))


class TextCNN(nn.Module):
    """Kim (2014): word embeddings, parallel 1-d convolutions, max over time, a linear head."""

    def __init__(self, vocab_size: int, num_classes: int, embed: int = 128, filters: int = 100,
                 widths: Sequence[int] = (3, 4, 5)) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.convs = nn.ModuleList(nn.Conv1d(embed, filters, w) for w in widths)
        self.head = nn.Linear(filters * len(widths), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of token ids ``tokens`` ``(B, T)``: max-over-time of each
        convolution width, concatenated, linear head."""
        x = self.embed(tokens).transpose(1, 2)
        pooled = [torch.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.head(torch.cat(pooled, dim=1))


class FastText(nn.Module):
    """fastText (Joulin et al. 2017): the mean of the words' embeddings, then a linear layer."""

    def __init__(self, vocab_size: int, num_classes: int, embed: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.head = nn.Linear(embed, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of token ids ``tokens`` ``(B, T)``: mean of the token
        embeddings, linear head."""
        return self.head(self.embed(tokens).mean(dim=1))


# --------------------------------------------------------------------------- third sweep: new kinds


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): 7x7 depthwise conv, LayerNorm, 4x pointwise MLP (GELU), residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + pw2(gelu(pw1(norm(dw(x)))))`` on feature maps ``(B, C, H, W)``, same shape."""
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    """A small ConvNeXt for 32 px inputs: 2x2 patchify stem, stages of widths 48/96/192 with
    [2, 2, 2] blocks, 2x2 stride-2 downsampling between them, global pool, LayerNorm, head."""

    def __init__(self, num_classes: int, in_channels: int = 3, dims: Sequence[int] = (48, 96, 192),
                 depths: Sequence[int] = (2, 2, 2)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], 2, stride=2)]
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            if i:
                layers.append(nn.Conv2d(dims[i - 1], dim, 2, stride=2))
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: stages, global average
        pool, LayerNorm, linear head."""
        return self.head(self.norm(self.features(x).mean(dim=(2, 3))))


class UNetSmall(nn.Module):
    """A U-Net-style encoder-decoder (Ronneberger et al. 2015): three levels (32/64/128
    channels) of two 3x3 conv + BN + ReLU, max-pool down, transposed-conv up with skip
    concatenation; the full-resolution decoder output is pooled into a class head."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(_conv_bn(cin, cout, 1), _conv_bn(cout, cout, 1))

        w = width
        self.enc1, self.enc2, self.mid = double(in_channels, w), double(w, 2 * w), double(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = double(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = double(2 * w, w)
        self.head = nn.Linear(w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: encoder, bottleneck,
        decoder with skip connections, pooled into the head."""
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1.mean(dim=(2, 3)))


class ViTTiny(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021) for 32 px: 4x4 patches (64 tokens) + a
    class token, width 128, 4 pre-norm layers, 4 heads, MLP 256, head on the class token."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_px: int = 32, patch: int = 4,
                 dim: int = 128, depth: int = 4, heads: int = 4, mlp: int = 256) -> None:
        super().__init__()
        tokens = (image_px // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: patch embeddings with a
        class token and positions, encoder, the class token's head."""
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.encoder(t)[:, 0]))


class MixerBlock(nn.Module):
    """An MLP-Mixer block: a token-mixing MLP across patches, then a channel-mixing MLP, each
    pre-norm and residual."""

    def __init__(self, tokens: int, dim: int, token_mlp: int, channel_mlp: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token = nn.Sequential(nn.Linear(tokens, token_mlp), nn.GELU(), nn.Linear(token_mlp, tokens))
        self.channel = nn.Sequential(nn.Linear(dim, channel_mlp), nn.GELU(), nn.Linear(channel_mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token mixing then channel mixing (each ``x + mlp(norm(x))``) on patch tokens
        ``(B, tokens, dim)``, same shape."""
        x = x + self.token(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel(self.norm2(x))


class MLPMixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021) for 32 px: 4x4 patches (64 tokens), width 128,
    4 blocks of token-mixing (MLP 64) and channel-mixing (MLP 512) MLPs, mean pooling."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_px: int = 32, patch: int = 4,
                 dim: int = 128, depth: int = 4) -> None:
        super().__init__()
        tokens = (image_px // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, 64, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of images ``x`` ``(B, C, H, W)``: patch tokens, Mixer
        blocks, LayerNorm, mean over tokens, linear head."""
        t = self.blocks(self.patch(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(t).mean(dim=1))


class DenseAutoencoder(nn.Module):
    """A dense autoencoder (3072 -> 512 -> 64 -> 512 -> 3072, ReLU, sigmoid output); a linear
    probe on the reconstruction gives the classes, so the decoder trains too."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 512, code: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, code), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, in_features), nn.Sigmoid())
        self.probe = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of the linear probe on the reconstruction of ``x``
        ``(B, ...)`` (flattened)."""
        return self.probe(self.decoder(self.encoder(x)))


class GPTTiny(nn.Module):
    """A small GPT decoder (Radford et al. 2019): token + learned positions, 4 pre-norm blocks
    of causal self-attention (``scaled_dot_product_attention``, 4 heads, width 256) and a
    4x GELU MLP, final LayerNorm; the logits of the last position over the vocabulary
    (next-token prediction)."""

    def __init__(self, vocab_size: int, seq_len: int, dim: int = 256, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, dim))
        self.blocks = nn.ModuleList(GPTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of token ids ``tokens`` ``(B, T)`` from the last position:
        embeddings plus positions, causal blocks, LayerNorm, head."""
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -1]))


class GPTBlock(nn.Module):
    """A pre-norm GPT decoder block: causal multi-head self-attention, then a 4x-wide GELU MLP, each
    residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``, on ``(B, T, dim)``, same shape;
        attention is causal."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class DLRMSmall(nn.Module):
    """DLRM-style recommender (Naumov et al. 2019) on categorical features only: one
    32-d embedding table per field (``fields`` x ``rows_per_field`` rows), pairwise dot
    products of the field embeddings, then a 512-256 MLP -> classes. Bandwidth-bound:
    most parameters sit in tables of which a batch touches a few rows."""

    def __init__(self, rows_per_field: int, fields: int, num_classes: int, dim: int = 32) -> None:
        super().__init__()
        self.fields = fields
        self.table = nn.Embedding(rows_per_field * fields, dim)
        self.register_buffer("offsets", torch.arange(fields) * rows_per_field, persistent=False)
        pairs = fields * (fields - 1) // 2
        self.top = nn.Sequential(nn.Linear(pairs + fields * dim, 512), nn.ReLU(inplace=True),
                                 nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))
        iu = torch.triu_indices(fields, fields, offset=1)
        self.register_buffer("pair_index", iu[0] * fields + iu[1], persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of categorical ids ``(B, fields)`` (per field, offset into
        one shared table): the embeddings and their pairwise dot products through the top MLP."""
        offsets: torch.Tensor = self.offsets  # type: ignore[assignment]
        pair_index: torch.Tensor = self.pair_index  # type: ignore[assignment]
        e = self.table(ids + offsets)  # (B, F, D)
        dots = torch.bmm(e, e.transpose(1, 2)).flatten(1)[:, pair_index]
        return self.top(torch.cat([e.flatten(1), dots], dim=1))


class TCN(nn.Module):
    """A WaveNet/TCN-style audio classifier (van den Oord et al. 2016; Bai et al. 2018):
    strided conv1d stem (kernel 16, stride 8) to 64 channels, 6 residual blocks of gated
    dilated causal conv1d (kernel 3, dilations 1..32) with 1x1 output convs, mean over time."""

    def __init__(self, num_classes: int, in_channels: int = 1, channels: int = 64, levels: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv1d(in_channels, channels, 16, stride=8)
        self.filters = nn.ModuleList(nn.Conv1d(channels, 2 * channels, 3, dilation=2**i) for i in range(levels))
        self.outs = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(levels))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of raw audio ``(B, channels, samples)``: stem, gated
        dilated causal residual blocks, mean over time."""
        h = self.stem(x)
        for conv, out in zip(self.filters, self.outs, strict=True):
            pad = int(conv.dilation[0]) * 2  # type: ignore[index]
            a, g = conv(nn.functional.pad(h, (pad, 0))).chunk(2, dim=1)
            h = h + out(torch.tanh(a) * torch.sigmoid(g))
        return self.head(h.mean(dim=2))


class AudioCNN(nn.Module):
    """A 1-d CNN on raw audio (M5, Dai et al. 2017): conv1d 80/4 to 64 channels, then
    conv1d 3 with 64, 128, 256 channels, each with BN, ReLU and max-pool 4; mean over time."""

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out, kernel, stride in ((64, 80, 4), (64, 3, 1), (128, 3, 1), (256, 3, 1)):
            layers += [nn.Conv1d(width, out, kernel, stride=stride, padding=kernel // 2 if kernel == 3 else 0),
                       nn.BatchNorm1d(out), nn.ReLU(inplace=True), nn.MaxPool1d(4)]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of raw audio ``(B, channels, samples)``: conv stages, mean
        over time."""
        return self.head(self.features(x).mean(dim=2))


class GraphConvNet(nn.Module):
    """A message-passing GNN (Kipf and Welling 2017 style, sum aggregation) on a fixed graph
    of ``nodes`` nodes and ``4 * nodes`` directed edges (a ring plus seeded random edges):
    3 layers of ``relu(W_self h + W_msg sum_{src->dst} h_src)`` built from ``index_select``
    (gather) and ``index_add`` (scatter), mean over nodes -> classes."""

    def __init__(self, nodes: int, in_features: int, num_classes: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        ring = torch.arange(nodes)
        src = torch.cat([ring, torch.randint(0, nodes, (3 * nodes,), generator=gen)])
        dst = torch.cat([(ring + 1) % nodes, torch.randint(0, nodes, (3 * nodes,), generator=gen)])
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        widths = [in_features] + [hidden] * layers
        self.self_lin = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.msg_lin = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:], strict=False))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` of node features ``(B, nodes, in_features)`` on the fixed
        graph: message-passing layers, mean over nodes."""
        h = x
        src: torch.Tensor = self.src  # type: ignore[assignment]
        dst: torch.Tensor = self.dst  # type: ignore[assignment]
        for lin_self, lin_msg in zip(self.self_lin, self.msg_lin, strict=True):
            msgs = lin_msg(h).index_select(1, src)
            agg = torch.zeros_like(msgs[:, : h.shape[1]]).index_add(1, dst, msgs)
            h = torch.relu(lin_self(h) + agg)
        return self.head(h.mean(dim=1))


# --------------------------------------------------------------------------- zoo


@dataclass(frozen=True)
class Workload:
    """A zoo entry: a model builder and the dataset whose samples it takes."""

    name: str
    model: str
    family: Family
    dataset: Dataset
    build: Callable[[], nn.Module]


def _image_builder(model: str, ds: Dataset) -> Callable[[], nn.Module]:
    channels, height = ds.sample_shape[0], ds.sample_shape[1]
    if model == "mlp":
        return lambda: MLP(ds.elems_per_sample, ds.num_classes)
    if model == "alexnet":
        return lambda: AlexNet(ds.num_classes, channels, height)
    if model == "mobilenet":
        return lambda: MobileNetV1(ds.num_classes, channels)
    if model == "resnet18":
        return lambda: ResNet18(ds.num_classes, channels)
    if model == "lenet":
        return lambda: LeNet5(ds.num_classes, channels)
    if model == "vgg11":
        return lambda: VGG11(ds.num_classes, channels)
    raise KeyError(model)


def _tabular_builder(model: str, ds: Dataset) -> Callable[[], nn.Module]:
    if model == "mlp":
        return lambda: MLP(ds.elems_per_sample, ds.num_classes)
    raise KeyError(model)


def _text_builder(model: str, ds: Dataset) -> Callable[[], nn.Module]:
    if model in ("lstm", "gru"):
        return lambda: RecurrentClassifier(model, ds.vocab_size, ds.num_classes)
    if model == "transformer":
        return lambda: TransformerClassifier(ds.vocab_size, ds.num_classes, ds.sample_shape[0])
    if model == "textcnn":
        return lambda: TextCNN(ds.vocab_size, ds.num_classes)
    if model == "fasttext":
        return lambda: FastText(ds.vocab_size, ds.num_classes)
    raise KeyError(model)


_MODEL_FAMILY = {
    "mlp": Family.MLP, "alexnet": Family.CNN, "mobilenet": Family.CNN, "resnet18": Family.CNN,
    "lstm": Family.RNN, "gru": Family.RNN, "transformer": Family.TRANSFORMER,
    "lenet": Family.CNN, "vgg11": Family.CNN, "textcnn": Family.CNN, "fasttext": Family.EMBEDDING,
    "convnext": Family.CNN, "unet": Family.CNN, "vit": Family.TRANSFORMER, "mixer": Family.MLP,
    "autoencoder": Family.MLP, "gpt": Family.TRANSFORMER, "dlrm": Family.EMBEDDING, "tcn": Family.CNN,
    "audiocnn": Family.CNN, "gnn": Family.OTHER,
}
MODELS: tuple[str, ...] = tuple(_MODEL_FAMILY)
_MODEL_DATASETS: dict[str, tuple[str, ...]] = {
    "mlp": ("cifar10", "imagenet100", "covtype"), "alexnet": ("cifar10", "imagenet100"),
    "mobilenet": ("cifar10", "imagenet100"), "resnet18": ("cifar10", "imagenet100"),
    "lstm": ("imdb",), "gru": ("imdb",), "transformer": ("imdb",),
    "lenet": ("cifar10",), "vgg11": ("cifar10",), "textcnn": ("imdb",), "fasttext": ("imdb",),
    "convnext": ("cifar10",), "unet": ("cifar10",), "vit": ("cifar10",), "mixer": ("cifar10",),
    "autoencoder": ("cifar10",), "gpt": ("tinytext",), "dlrm": ("criteo",), "tcn": ("speech",),
    "audiocnn": ("speech",), "gnn": ("graph",),
}


def _new_kind_builder(model: str, ds: Dataset) -> Callable[[], nn.Module]:
    """Builders of the third sweep's architectures (kinds the first two sweeps lack)."""
    shape = ds.sample_shape
    builders: dict[str, Callable[[], nn.Module]] = {
        "convnext": lambda: ConvNeXtTiny(ds.num_classes, shape[0]),
        "unet": lambda: UNetSmall(ds.num_classes, shape[0]),
        "vit": lambda: ViTTiny(ds.num_classes, shape[0], shape[-1]),
        "mixer": lambda: MLPMixer(ds.num_classes, shape[0], shape[-1]),
        "autoencoder": lambda: DenseAutoencoder(ds.elems_per_sample, ds.num_classes),
        "gpt": lambda: GPTTiny(ds.vocab_size, shape[0]),
        "dlrm": lambda: DLRMSmall(ds.vocab_size, shape[0], ds.num_classes),
        "tcn": lambda: TCN(ds.num_classes, shape[0]),
        "audiocnn": lambda: AudioCNN(ds.num_classes, shape[0]),
        "gnn": lambda: GraphConvNet(shape[0], shape[1], ds.num_classes),
    }
    return builders[model]


NEW_KIND_MODELS: tuple[str, ...] = ("convnext", "unet", "vit", "mixer", "autoencoder", "gpt", "dlrm", "tcn", "audiocnn", "gnn")
"""The third sweep's architectures (``data/traces/h200_archs_measured.parquet``)."""


def _make_zoo() -> dict[str, Workload]:
    zoo: dict[str, Workload] = {}
    for model, family in _MODEL_FAMILY.items():
        for ds_name in _MODEL_DATASETS[model]:
            ds = DATASETS[ds_name]
            if model in NEW_KIND_MODELS:
                build = _new_kind_builder(model, ds)
            elif ds.vocab_size:
                build = _text_builder(model, ds)
            elif len(ds.sample_shape) == 1:
                build = _tabular_builder(model, ds)
            else:
                build = _image_builder(model, ds)
            name = f"{model}_{ds_name}"
            zoo[name] = Workload(name, model, family, ds, build)
    return zoo


ZOO: dict[str, Workload] = _make_zoo()


def get_workload(name: str) -> Workload:
    """A zoo entry by name; the error lists the known names."""
    if name not in ZOO:
        raise KeyError(f"unknown workload '{name}'; known: {', '.join(ZOO)}")
    return ZOO[name]


# --------------------------------------------------------------------------- steps


def make_batch(ds: Dataset, batch_size: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (inputs, integer labels) shaped like ``ds``; on ``meta`` nothing is filled."""
    shape = (batch_size, *ds.sample_shape)
    dev = torch.device(device)
    if dev.type == "meta":
        return torch.empty(shape, dtype=ds.torch_dtype, device=dev), torch.empty(batch_size, dtype=torch.int64, device=dev)
    if ds.vocab_size:
        x = torch.randint(0, ds.vocab_size, shape, generator=generator, dtype=ds.torch_dtype)
    else:
        x = torch.randn(shape, generator=generator).to(ds.torch_dtype)
    y = torch.randint(0, ds.num_classes, (batch_size,), generator=generator)
    return x.to(dev), y.to(dev)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 and weight decay 5e-4, the step the FLOP count assumes."""
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def make_step(model: nn.Module, mode: str, optimizer: torch.optim.Optimizer | None = None
              ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One step on a batch: ``infer`` = forward under inference mode; ``train`` = forward,
    cross-entropy, backward, optimizer step. Sets ``model.train()``/``eval()`` accordingly."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "infer":
        model.eval()

        def infer(x: torch.Tensor, y: torch.Tensor) -> None:
            with torch.inference_mode():
                model(x)

        return infer
    model.train()
    opt = optimizer or make_optimizer(model)
    loss_fn = nn.CrossEntropyLoss()

    def train(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return train


# --------------------------------------------------------------------------- description


@dataclass(frozen=True)
class ModelDescription:
    """What a placement policy sees of a model at one batch size and mode."""

    flops_per_batch: float
    param_count: int
    input_elems_per_sample: int
    input_bytes_per_sample: int


def _conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int],
                         _bias: Any, _stride: Any, _padding: Any, _dilation: Any, transposed: bool,
                         _output_padding: Any, _groups: Any, output_mask: Sequence[bool],
                         out_shape: Any = None, **kwargs: Any) -> int:
    """Groups-correct FLOPs of ``aten.convolution_backward``: the forward's multiply-adds
    (``2 * N * output positions * weight elements``) once per gradient asked for."""
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    forward = 2 * x_shape[0] * math.prod(spatial) * math.prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(build: Callable[[], nn.Module], sample_shape: Sequence[int], dtype: torch.dtype,
                batch_size: int, mode: str) -> float:
    """FLOPs of one step on ``batch_size`` samples, counted on ``meta`` (see module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build()
    x = torch.empty((batch_size, *sample_shape), dtype=dtype, device="meta")
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})
    if mode == "infer":
        model.eval()
        with counter, torch.no_grad():
            model(x)
        return float(counter.get_total_flops())
    model.train()
    with counter:
        out = model(x)
        out.float().sum().backward()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return float(counter.get_total_flops() + OPTIMIZER_FLOPS_PER_PARAM * params)


def describe_model(build: Callable[[], nn.Module], sample_shape: Sequence[int], dtype: str | torch.dtype,
                   batch_size: int, mode: str) -> ModelDescription:
    """FLOPs per batch (on meta), trainable parameters and input size of any model."""
    tdtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    shape = tuple(int(s) for s in sample_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input shape must be positive integers per sample (no batch dim), got {list(sample_shape)}")
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    elems = math.prod(shape)
    return ModelDescription(
        flops_per_batch=count_flops(build, shape, tdtype, batch_size, mode),
        param_count=int(params),
        input_elems_per_sample=int(elems),
        input_bytes_per_sample=int(elems * torch.empty((), dtype=tdtype).element_size()),
    )


COUNT_BATCHES = (2, 3)
"""Batch sizes at which zoo models are counted (batch-norm training needs at least 2)."""


@lru_cache(maxsize=64)
def zoo_count(name: str, mode: str, batch_size: int) -> ModelDescription:
    """A zoo workload counted on ``meta`` at one batch size (cached per process)."""
    w = get_workload(name)
    return describe_model(w.build, w.dataset.sample_shape, w.dataset.dtype, batch_size, mode)


def describe_workload(name: str, batch_size: int, mode: str,
                      counts: tuple[ModelDescription, ModelDescription] | None = None) -> Job:
    """The :class:`Job` of a zoo workload at a batch size and mode.

    Every zoo model treats samples independently, so its FLOPs per step are affine in the
    batch size (``a * b + c``, ``c`` the optimizer's per-parameter work): they are counted
    on ``meta`` at :data:`COUNT_BATCHES` (cached; or passed in as ``counts``) and extended
    exactly to ``batch_size``. Counting a recurrent model on ``meta`` takes seconds, which
    this keeps out of a sweep.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    w = get_workload(name)
    b0, b1 = COUNT_BATCHES
    lo, hi = counts if counts is not None else (zoo_count(name, mode, b0), zoo_count(name, mode, b1))
    slope = (hi.flops_per_batch - lo.flops_per_batch) / (b1 - b0)
    flops = lo.flops_per_batch + (batch_size - b0) * slope
    d = ModelDescription(flops, lo.param_count, lo.input_elems_per_sample, lo.input_bytes_per_sample)
    return _job(name, w.family.value, mode, batch_size, d)


def _job(name: str, family: str, mode: str, batch_size: int, d: ModelDescription) -> Job:
    return Job.model_validate({
        "name": name, "family": family, "mode": mode, "batch_size": batch_size,
        "flops_per_batch": d.flops_per_batch, "param_count": d.param_count,
        "input_elems_per_sample": d.input_elems_per_sample, "input_bytes_per_sample": d.input_bytes_per_sample,
    })


def load_model_factory(path: str) -> Callable[[], nn.Module]:
    """``package.module:attribute`` -> a zero-argument factory of an ``nn.Module``.

    The attribute may be an ``nn.Module`` subclass or a function returning a module; it is
    called without arguments (on ``meta``, so nothing is allocated).
    """
    if ":" not in path:
        raise ValueError(f"model path '{path}': use 'package.module:attribute' (e.g. mypkg.models:Net)")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model path '{path}': cannot import module '{module_name}': {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model path '{path}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model path '{path}': '{attr}' is not a class or function")

    def factory() -> nn.Module:
        try:
            model = obj()
        except TypeError as exc:
            raise ValueError(
                f"model path '{path}': calling {attr}() without arguments failed ({exc}); point at a "
                "function that builds the model with its arguments"
            ) from exc
        if not isinstance(model, nn.Module):
            raise ValueError(f"model path '{path}': '{attr}()' returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return factory


_SPEC_KEYS = {"name", "model", "workload", "family", "mode", "batch_size", "input_shape", "input_dtype"}


def describe_spec(spec: dict[str, Any]) -> Job:
    """A :class:`Job` from a job spec (see :func:`load_job_spec` for the keys)."""
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"job spec: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_SPEC_KEYS))}")
    for key in ("mode", "batch_size"):
        if key not in spec:
            raise ValueError(f"job spec: missing '{key}'")
    mode = str(spec["mode"])
    if mode not in MODES:
        raise ValueError(f"job spec: 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    batch = spec["batch_size"]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"job spec: 'batch_size' must be a whole number >= 1, got {batch!r}")
    if "workload" in spec:
        job = describe_workload(str(spec["workload"]), batch, mode)
        return job.model_copy(update={"name": str(spec.get("name", job.name))})
    if "model" not in spec:
        raise ValueError("job spec: give 'workload' (a zoo name) or 'model' ('package.module:attribute')")
    for key in ("family", "input_shape"):
        if key not in spec:
            raise ValueError(f"job spec: a 'model' spec needs '{key}'")
    family = str(spec["family"])
    if family not in FAMILIES:
        raise ValueError(f"job spec: 'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
    shape = spec["input_shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError("job spec: 'input_shape' must be a list of whole numbers per sample, e.g. [3, 32, 32]")
    dtype = str(spec.get("input_dtype", "float32"))
    if dtype not in _DTYPES:
        raise ValueError(f"job spec: 'input_dtype' must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    factory = load_model_factory(str(spec["model"]))
    d = describe_model(factory, shape, dtype, batch, mode)
    return _job(str(spec.get("name", spec["model"])), family, mode, batch, d)


def load_job_spec(path: Path) -> Job:
    """Read a job spec file (JSON or YAML) and describe it.

    Keys: ``mode`` and ``batch_size``, and either ``workload`` (a zoo name) or ``model``
    (``package.module:attribute``) with ``family``, ``input_shape`` (per sample) and
    optionally ``input_dtype`` (default ``float32``); ``name`` is optional.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"job spec file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ValueError(f"job spec {path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"job spec {path}: expected an object of keys, got {type(data).__name__}")
    return describe_spec(data)
