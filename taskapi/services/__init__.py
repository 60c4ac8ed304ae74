"""Business rules as plain functions with keyword-only arguments; they raise domain errors."""
