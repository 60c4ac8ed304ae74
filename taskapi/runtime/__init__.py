"""Processes around the app: the gunicorn worker and logger (serving.py) and the embedded
dev runner behind `make run` (devserver.py)."""
