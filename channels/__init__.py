"""Channel adapters, one module per channel, all implementing bot.ports.Channel."""
