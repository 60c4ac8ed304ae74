"""MongoEngine documents. Indexes are declared in meta and created by migrations, never lazily."""
