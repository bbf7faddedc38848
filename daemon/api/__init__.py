"""The REST API: thin handlers that validate, call `itsm`/`store`, and serialize."""
