"""End-to-end tests: the daemon as a process, driven by real Prometheus and Alertmanager."""
