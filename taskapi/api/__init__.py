"""Blueprints: thin views that parse with a schema, call a service and dump with a schema."""
