"""The web inbox (issue 19): a page the hub serves itself, built on the documented API only.

``hub/web/routes.py`` serves ``static/`` (HTML, ES modules, CSS, the en/zh catalogs) with a
strict Content-Security-Policy; nothing here reads Redis or the store: every byte of customer
data the page shows comes through ``/api/v1`` with the signed-in agent's scope applied.
"""
