"""The key a rate limit counts a client by: shared by the setup page and the room service."""

from __future__ import annotations

import ipaddress


def client_key(remote: str | None) -> str:
    """An IPv4 address as it is (also one mapped into IPv6, ::ffff:a.b.c.d, as a dual-stack
    socket reports it), an IPv6 address by its /64: a host gets a whole /64 and picks addresses
    in it freely, privacy addresses at will, so counting single addresses would let it take a
    fresh one for every attempt. Anything that is no address is counted as it is."""
    if not remote:
        return "unknown"
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return remote  # not an address (a Unix socket's peer): counted as it is
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        # Built from the integer: drops a zone (fe80::1%eth0) that ip_network would refuse.
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)
