"""Events from Nova's and Neutron's notifications, for Nova releases without hooks.

Worker side (Python 3.11, oslo.messaging). ``message`` reads one notification as
it comes off the bus; ``nova`` and ``neutron`` say what it means for an
instance; ``state`` remembers what the listener learnt (addresses, ports,
floating IPs); ``plan`` combines the two into the events to enqueue;
``listener`` runs oslo.messaging's notification listener and ``explain``
shows an operator what one notification would do.
"""
