"""Facebook Messenger and Instagram messaging channels (``channels.messenger.adapter``)."""
