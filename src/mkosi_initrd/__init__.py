"""mkosi-initrd: initrds and UKIs built from the packages already installed."""

__version__ = "0.1.0"
