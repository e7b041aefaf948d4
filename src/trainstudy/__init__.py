"""trainstudy: how weight initialization and the loss function change how fast a network converges."""

__version__ = "0.1.0"
