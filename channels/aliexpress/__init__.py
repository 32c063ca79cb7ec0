"""AliExpress buyer messages (CHANNELS.md §6.3): EXPERIMENTAL, polling only."""
