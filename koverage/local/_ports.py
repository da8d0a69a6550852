"""Free TCP ports on an interface, for children that need a fixed port."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port on `host` that nothing listens on right now.

    Known limitation: the port is free when this returns, not when a child
    binds it later; another process may take it in between. Engines that pick
    their own port retry once with a new one when the child fails to start,
    which covers the rare collision; a fix that closes the race needs the
    child to bind port 0 and report the port back, which Tansu and Rotel
    cannot do.

    Args:
        host: The interface to probe.

    Returns:
        A port number between 1024 and 65535.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
