"""What the SLidR tests share: a tiny stand-in for the image teacher."""
from torch import Tensor, nn


class PoolTeacher(nn.Module):
    """Any module mapping images to maps: (B, 3, H, W) → 4x4 average pooling → a 1x1 conv → (B, 6, H/4, W/4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.conv(nn.functional.avg_pool2d(images, 4))
