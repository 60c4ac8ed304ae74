"""The repository's own deliverables: configuration, deploy files (Dockerfile, compose, Nginx),
the Postman collection."""
