"""The control socket: wire protocol, aiohttp server, and the small stdlib-only ``ctl`` client.

Nothing is imported here: ``vastinit ctl`` must not pay for the server's dependencies.
"""
