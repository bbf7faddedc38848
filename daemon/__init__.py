"""incidentd: monitoring alerts in, correlated and managed incidents out."""

__version__ = "0.1.0"
