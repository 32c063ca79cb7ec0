"""The email channel's building blocks: MIME parsing, quote stripping, threading, the Amazon
buyer–seller relay's rules and reply composition. Pure functions, no network and no storage:
the adapter and the IMAP/SMTP transports build on them."""
