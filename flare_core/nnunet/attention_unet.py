"""The teacher's Attention U-Net: nnU-Net's plain encoder, an attentive decoder.

The encoder is dynamic_network_architectures' `PlainConvEncoder`, built from
the same plans keywords as nnU-Net's `PlainConvUNet`, so nnU-Net's planner and
trainer handle this network like their own (plans refer to it as
`flare_core.nnunet.attention_unet.AttentionUNet`; `pydoc.locate` finds it).

Each decoder stage, from the bottleneck up:
1. upsample the coarser features with a transposed convolution;
2. grid attention gate on the skip (only the `gated_skips` deepest skips; the
   shallow ones see too little context to gate usefully and cost the most):
   the coarser decoder features, still on their own coarse grid, score every
   skip position additively (skip projected to the coarse grid + gating
   projection -> ReLU -> 1x1 conv -> sigmoid); the scores are interpolated to
   the skip's grid and multiply the skip;
3. concatenate and reweight the channels (squeeze-and-excitation style, from
   average and max pooled descriptors);
4. nnU-Net's stacked conv blocks;
5. at the coarsest decoder stage only, a non-local (self-attention) block
   whose residual branch starts switched off (learnable scale at 0), so early
   training behaves like a plain U-Net.
Deep supervision mirrors `UNetDecoder`: one segmentation head per stage,
outputs ordered finest first, only the finest when `decoder.deep_supervision`
is off (nnU-Net toggles that flag for validation and inference).
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_convtransp
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn


class GridAttentionGate(nn.Module):
    """Additive attention: a coarse gating signal weighs each position of a finer skip."""

    def __init__(self, conv_op: Type[nn.Module], skip_channels: int, gate_channels: int, stride: Sequence[int],
                 norm_op: Type[nn.Module] | None, norm_op_kwargs: dict | None):
        super().__init__()
        inter = max(skip_channels // 2, 1)
        stride = tuple(int(s) for s in stride)
        # Kernel = stride maps the skip exactly onto the gating signal's grid.
        self.skip_to_coarse = conv_op(skip_channels, inter, kernel_size=stride, stride=stride, bias=False)
        self.gate_proj = conv_op(gate_channels, inter, kernel_size=1, bias=True)
        self.score = conv_op(inter, 1, kernel_size=1, bias=True)
        norm = norm_op(skip_channels, **(norm_op_kwargs or {})) if norm_op is not None else nn.Identity()
        self.output = nn.Sequential(conv_op(skip_channels, skip_channels, kernel_size=1, bias=True), norm)
        self.mode = "bilinear" if convert_conv_op_to_dim(conv_op) == 2 else "trilinear"

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        coarse = self.skip_to_coarse(skip)
        g = self.gate_proj(gate)
        if g.shape[2:] != coarse.shape[2:]:  # only when a size was not divisible by the stride
            g = F.interpolate(g, size=coarse.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.score(F.relu(coarse + g)))
        alpha = F.interpolate(alpha, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.output(skip * alpha)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels, from average- and max-pooled descriptors."""

    def __init__(self, conv_op: Type[nn.Module], channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // max(reduction, 1), 4)
        self.mlp = nn.Sequential(
            conv_op(channels, hidden, kernel_size=1, bias=True),
            nn.ReLU(inplace=True),
            conv_op(hidden, channels, kernel_size=1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        avg = x.mean(dim=dims, keepdim=True)
        peak = x.amax(dim=dims, keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))


class NonLocalBlock(nn.Module):
    """Self-attention over all positions (embedded Gaussian), added as a gated residual."""

    def __init__(self, conv_op: Type[nn.Module], channels: int):
        super().__init__()
        inter = max(channels // 2, 1)
        self.query = conv_op(channels, inter, kernel_size=1)
        self.key = conv_op(channels, inter, kernel_size=1)
        self.value = conv_op(channels, inter, kernel_size=1)
        self.project = conv_op(inter, channels, kernel_size=1)
        # Not a conv weight, so nnU-Net's He initialisation leaves it at 0.
        self.residual_scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, spatial = x.shape[0], x.shape[2:]
        q, k, v = (m(x).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        y = y.reshape(b, -1, *spatial)
        return x + self.residual_scale * self.project(y)


class AttentionDecoder(nn.Module):
    """U-Net decoder with grid attention gates, channel attention and a non-local block."""

    def __init__(self, encoder: PlainConvEncoder, num_classes: int, n_conv_per_stage: int | Sequence[int],
                 deep_supervision: bool, nonlin_first: bool = False, gated_skips: int | None = 3,
                 channel_attention: bool = True, channel_reduction: int = 4, non_local: bool = True):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder
        self.num_classes = num_classes
        n_stages = len(encoder.output_channels)
        n_decoder = n_stages - 1
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_decoder
        if len(n_conv_per_stage) != n_decoder:
            raise ValueError(f"n_conv_per_stage_decoder needs {n_decoder} entries, got {len(n_conv_per_stage)}")
        n_gated = n_decoder if gated_skips is None else max(0, min(int(gated_skips), n_decoder))
        conv_op, transp_op = encoder.conv_op, get_matching_convtransp(conv_op=encoder.conv_op)

        self.transpconvs, self.gates, self.channel_attention = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList()
        for s in range(n_decoder):  # s = 0 is the coarsest decoder stage
            below, skip = encoder.output_channels[-(s + 1)], encoder.output_channels[-(s + 2)]
            stride = encoder.strides[-(s + 1)]
            self.transpconvs.append(transp_op(below, skip, stride, stride, bias=encoder.conv_bias))
            self.gates.append(GridAttentionGate(conv_op, skip, below, stride, encoder.norm_op, encoder.norm_op_kwargs)
                              if s < n_gated else nn.Identity())
            self.channel_attention.append(ChannelAttention(conv_op, 2 * skip, channel_reduction)
                                          if channel_attention else nn.Identity())
            self.stages.append(StackedConvBlocks(
                n_conv_per_stage[s], conv_op, 2 * skip, skip, encoder.kernel_sizes[-(s + 2)], 1, encoder.conv_bias,
                encoder.norm_op, encoder.norm_op_kwargs, encoder.dropout_op, encoder.dropout_op_kwargs,
                encoder.nonlin, encoder.nonlin_kwargs, nonlin_first))
            # Built even without deep supervision so every checkpoint loads either way.
            self.seg_layers.append(conv_op(skip, num_classes, 1, 1, 0, bias=True))
        first_skip = encoder.output_channels[-2]
        self.non_local = NonLocalBlock(conv_op, first_skip) if non_local and n_decoder > 0 else None
        self.n_gated = n_gated

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        below = skips[-1]
        outputs = []
        for s in range(len(self.stages)):
            skip = skips[-(s + 2)]
            if s < self.n_gated:
                skip = self.gates[s](skip, below)
            x = torch.cat((self.transpconvs[s](below), skip), dim=1)
            x = self.stages[s](self.channel_attention[s](x))
            if s == 0 and self.non_local is not None:
                x = self.non_local(x)
            if self.deep_supervision or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
            below = x
        outputs = outputs[::-1]  # finest first, as nnU-Net's loss expects
        return outputs if self.deep_supervision else outputs[0]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Rough count of stored activations, for nnU-Net's patch/batch planning."""
        skip_sizes = []
        size = list(input_size)
        for stride in self.encoder.strides[:-1]:
            size = [i // j for i, j in zip(size, stride)]
            skip_sizes.append(size)
        total = np.int64(0)
        for s in range(len(self.stages)):
            size, channels = skip_sizes[-(s + 1)], self.encoder.output_channels[-(s + 2)]
            voxels = np.prod(size, dtype=np.int64)
            total += self.stages[s].compute_conv_feature_map_size(size)
            total += 3 * channels * voxels  # upsampled features + concatenation copy
            if s < self.n_gated:
                total += 2 * channels * voxels  # gated and projected skip
            if self.deep_supervision or s == len(self.stages) - 1:
                total += self.num_classes * voxels
        return total


class AttentionUNet(AbstractDynamicNetworkArchitectures):
    """PlainConvUNet's keywords plus the attention options of `AttentionDecoder`."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: int | Sequence[int],
                 conv_op: Type[nn.Module], kernel_sizes: int | Sequence, strides: int | Sequence,
                 n_conv_per_stage: int | Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: int | Sequence[int], conv_bias: bool = False,
                 norm_op: Type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 dropout_op: Type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = None, nonlin_kwargs: dict | None = None,
                 deep_supervision: bool = False, nonlin_first: bool = False, gated_skips: int | None = 3,
                 channel_attention: bool = True, channel_reduction: int = 4, non_local: bool = True):
        super().__init__()
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_stages
        self.encoder = PlainConvEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_conv_per_stage,
            conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
            return_skips=True, nonlin_first=nonlin_first)
        self.decoder = AttentionDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, nonlin_first,
            gated_skips=gated_skips, channel_attention=channel_attention, channel_reduction=channel_reduction,
            non_local=non_local)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        if len(input_size) != convert_conv_op_to_dim(self.encoder.conv_op):
            raise ValueError("give the spatial patch size only, without batch or channel axes")
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        InitWeights_He(1e-2)(module)
