"""HTTP plumbing every route goes through: the Api and Blueprint, the body gate, token guards,
rate limits, headers, the response cache decorator, problem+json, logs and metrics."""
