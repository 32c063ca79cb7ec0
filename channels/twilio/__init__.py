"""Twilio Programmable Messaging (SMS/MMS); see ``channels.twilio.adapter``."""
