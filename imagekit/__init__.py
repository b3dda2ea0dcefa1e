"""imagekit: build, test, publish and share golden OpenStack images."""

from imagekit.builders.dib import build
from imagekit.config import Config, load_config

__all__ = ["Config", "build", "load_config"]
