"""minidreamer4: a compact, fast PyTorch implementation of Dreamer 4 (Hafner, Yan, Lillicrap 2025)."""

__version__ = "0.1.0"
