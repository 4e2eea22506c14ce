"""The audit store: orders, decisions, outcomes and API keys in a SQL database."""
