"""Reading pixels and pixel sizes: the first step of the data flow."""

from fetometry.io.images import IMAGE_SUFFIXES, ImageReadError, read_image, read_mask
from fetometry.io.pixel_size import (
    PixelSizeError,
    read_pixel_size_csv,
    validate_pixel_size,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "PixelSizeError",
    "read_image",
    "read_mask",
    "read_pixel_size_csv",
    "validate_pixel_size",
]
