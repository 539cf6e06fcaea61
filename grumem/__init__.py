"""grumem: a kernel-accelerated runtime for gated recurrent-memory (GRU-Mem) agents."""

__version__ = "0.1.0"
