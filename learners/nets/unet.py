"""A U-Net family for per-pixel prediction (classes, heatmaps, features), after Ronneberger et al.,
MICCAI (2015), with AtomAI's dilated bottleneck (Ziatdinov et al., ACS Nano 11, 12742 (2017)).

Input (batch, ny, nx, in_channels) with ny and nx divisible by 2**depth; output (batch, ny, nx,
out_channels). `features` returns the last decoder layer (batch, ny, nx, width) for few-shot learners.
GroupNorm instead of BatchNorm keeps the model free of running statistics, so the train step is pure.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from learners.train import register_builder


class ConvBlock(nnx.Module):
    """Two 3x3 convolutions, each followed by GroupNorm and GELU."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1, rngs: nnx.Rngs):
        groups = math.gcd(8, out_channels)  # 8 groups where the width allows
        self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), kernel_dilation=dilation, rngs=rngs)
        self.norm1 = nnx.GroupNorm(out_channels, num_groups=groups, rngs=rngs)
        self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), kernel_dilation=dilation, rngs=rngs)
        self.norm2 = nnx.GroupNorm(out_channels, num_groups=groups, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.gelu(self.norm1(self.conv1(x)))
        return jax.nn.gelu(self.norm2(self.conv2(x)))


def _pool(x):
    b, ny, nx, c = x.shape
    return x.reshape(b, ny // 2, 2, nx // 2, 2, c).max(axis=(2, 4))


def _upsample(x):
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@register_builder("unet")
class UNet(nnx.Module):
    """depth: number of 2x poolings; width: channels of the first level (doubled per level, capped at
    8 * width); dilations: dilation rates of the bottleneck blocks (summed, as in AtomAI's dilated net)."""

    def __init__(self, *, in_channels: int = 1, out_channels: int, depth: int = 3, width: int = 16,
                 dilations: tuple[int, ...] = (1, 2, 4), rngs: nnx.Rngs):
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("depth", depth, 1), ("width", width, 1)):
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"UNet {name}={value!r} is not allowed; give an integer >= {low}")
        if not dilations or not all(isinstance(d, int) and d >= 1 for d in dilations):
            raise ValueError(f"UNet dilations={dilations!r} is not allowed; give one or more integers >= 1")
        self.depth = depth
        channels = [min(width * 2 ** level, 8 * width) for level in range(depth + 1)]
        self.down = nnx.List([ConvBlock(in_channels if level == 0 else channels[level - 1], channels[level],
                                        rngs=rngs) for level in range(depth)])
        self.bottleneck = nnx.List([ConvBlock(channels[depth - 1], channels[depth], dilation=d, rngs=rngs)
                                    for d in dilations])
        self.up = nnx.List([ConvBlock(channels[level + 1] + channels[level], channels[level], rngs=rngs)
                            for level in reversed(range(depth))])
        self.head = nnx.Conv(channels[0], out_channels, (1, 1), rngs=rngs)

    def features(self, x):
        """(batch, ny, nx, in_channels) -> (batch, ny, nx, width): the last decoder layer."""
        if x.ndim != 4 or x.shape[1] % 2 ** self.depth or x.shape[2] % 2 ** self.depth:
            raise ValueError(f"UNet input shape {x.shape} is not allowed; give (batch, ny, nx, channels) with "
                             f"ny and nx divisible by {2 ** self.depth}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = _pool(x)
        x = sum(block(x) for block in self.bottleneck)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(jnp.concatenate([_upsample(x), skip], axis=-1))
        return x

    def __call__(self, x):
        return self.head(self.features(x))
