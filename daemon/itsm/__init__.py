"""ITSM records and their rules: incident lifecycle and timeline (more to come)."""
