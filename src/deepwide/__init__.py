"""deepwide: depth vs width of distilled self-supervised speech students."""

__version__ = "0.1.0"
