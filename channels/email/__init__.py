"""The email channel's building blocks: IMAP in and SMTP out (``imap``, ``smtp``), MIME parsing,
quote stripping, threading, the Amazon buyer–seller relay's rules and reply composition
(``mime``, ``quotes``, ``threading``, ``amazon``, ``compose``). The ``EmailChannel`` polling
adapter that wires them together is the next step (README: Channels)."""
