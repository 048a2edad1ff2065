"""Network architectures shared by the learners."""

from learners.nets.unet import UNet

__all__ = ["UNet"]
