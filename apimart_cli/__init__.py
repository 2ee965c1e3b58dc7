"""Generate images with APIMart's gpt-image-2 API from the shell."""

__version__ = "0.1.0"
