# Tries the network a function has: a TCP round trip over loopback, and a route off the
# machine; reports NETWORK_WORD from its environment (set at registration, or absent).
import os
import socket


def main(args):
    out = {"word": os.environ.get("NETWORK_WORD")}
    try:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname(), timeout=2)
        peer, _ = srv.accept()
        c.sendall(b"ping")
        out["loopback"] = peer.recv(4) == b"ping"
    except OSError as e:
        out["loopback"] = False
        out["loopback_error"] = str(e)
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        out["off_machine"] = True
    except OSError as e:
        out["off_machine"] = False
        out["off_machine_error"] = str(e)
    return out
