"""Servicers: thin adapters from generated service classes to StandardMethods."""
