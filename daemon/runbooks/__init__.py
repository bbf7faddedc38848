"""Automated runbooks (catalog, executor, guards): not built yet."""
