"""Shopee Open Platform v2 seller chat channel (see README.md)."""
