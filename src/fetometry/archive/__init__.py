"""Archive-scale prediction: millions of images and DICOMs on a Ray cluster.

``listing`` and ``shards`` need no Ray; ``run_archive`` (``ray_engine``) imports Ray
when first called, so ``import fetometry.archive`` works without the ``[ray]`` extra.
"""


def run_archive(*args, **kwargs):
    """``fetometry predict --engine ray`` (see ``fetometry.archive.ray_engine.run_archive``)."""
    try:
        from fetometry.archive.ray_engine import run_archive as run
    except ImportError as error:
        raise ImportError(f"--engine ray needs Ray Data and pyarrow ({error}): pip install 'fetometry[ray]'") from None
    return run(*args, **kwargs)


__all__ = ["run_archive"]
