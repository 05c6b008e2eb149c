"""Reading pixels and pixel sizes: the first step of the data flow.

The names below load lazily, so ``fetometry.io.uploads`` (file sniffing) imports no OpenCV.
"""

_EXPORTS = {
    "IMAGE_SUFFIXES": "images",
    "ImageReadError": "images",
    "read_image": "images",
    "read_mask": "images",
    "PixelSizeError": "pixel_size",
    "read_pixel_size_csv": "pixel_size",
    "validate_pixel_size": "pixel_size",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"fetometry.io.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
