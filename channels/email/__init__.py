"""The email channel: IMAP in, SMTP out, MIME parsing and threading."""
