"""The services and models called directly (no HTTP), against real servers: query plans, task
rules, accounts, migrations, seeding."""
