"""DHgate station messages (CHANNELS.md §6.5): EXPERIMENTAL, polling only."""
