"""The local stack: real servers from wheels, and the service processes on top of them."""
