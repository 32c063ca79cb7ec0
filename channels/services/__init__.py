"""What an adapter may ask of the hub, as protocols: cursors, leases, OAuth tokens, a shared rate
limiter, an attachment store, the delivery index and the fetch-after-notify queue.

Each is implemented on Redis in ``storage/`` and handed to the adapter through its
``AdapterContext``; a plugin author's tests can pass in-memory versions (the conformance kit
has them). An adapter never talks to Redis itself.
"""
