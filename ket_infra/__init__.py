"""ket-infra: least-privilege cloud network rules for KET clusters."""

__version__ = "0.1.0"
