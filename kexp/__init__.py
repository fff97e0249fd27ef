"""kexp: run Keras experiments from YAML configs."""

__version__ = "0.1.0"
