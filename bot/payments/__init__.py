"""Payment links, provider webhooks, allocation and reconciliation."""
