"""The Telegram Bot API channel (``channels.telegram.adapter:TelegramChannel``)."""
