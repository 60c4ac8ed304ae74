"""The Postman collection run with newman against a live server (`make postman`)."""
