"""Core library: configuration, data and raster I/O, transforms, model registry, metrics."""

__version__ = "0.1.0"
