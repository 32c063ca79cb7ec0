"""eBay member messages: REST Message API plus SOAP Platform Notifications."""
