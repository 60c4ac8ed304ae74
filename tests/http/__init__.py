"""The API over Flask's test client, with real MongoDB-compatible and Redis servers behind it."""
