"""autoal-dist: Ray-distributed active learning with AutoAL."""
__version__ = "0.1.0"
