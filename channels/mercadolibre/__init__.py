"""Mercado Libre post-sale messages (CHANNELS.md §6.1): notify, fetch, reconcile, reply."""
