"""Marshmallow schemas by purpose: request bodies, query arguments and responses."""
