"""`appliance run publisher`: the kiosk's camera, microphone and data to remote viewers (WebRTC).

Hosts pairing (appliance.pairing: the device flow, pairing.status, pairing.start and
pairing.unpair on the bus) because the publisher is the one that uses the device token: the
WebSocket to the room service connects with it, reconnects when it changes, and reports a
refused token back so pairing can check it and forget it if it was revoked.

    call.state           viewers with rtt, jitter, loss, bitrate; room_connected; talking (state)
    call.chat            a viewer's text, for the kiosk screen (event)
    call.remote_video    a viewer's camera in the call-remote-video ring (telemetry)
    alert.ack            a viewer acknowledged a fever alert (event)

The parts and how faults are contained: appliance.publisher.service.
"""

from __future__ import annotations

from appliance.bus.topics import PairingStatus
from appliance.pairing.credentials import DeviceCredentials
from appliance.pairing.service import Pairing
from appliance.publisher.service import PublisherService
from appliance.publisher.signaling import Credentials
from appliance.runtime import Runtime


async def main(rt: Runtime) -> None:
    bus = await rt.connect_bus()
    used: list[DeviceCredentials | None] = [None]

    def on_pairing(status: PairingStatus) -> None:
        # Paired, unpaired or paired anew: the link drops what it has and uses the new token.
        if pairing.credentials != used[0]:
            used[0] = pairing.credentials
            service.link.refresh()

    pairing = Pairing(rt.config, bus, on_status=on_pairing)

    async def credentials() -> Credentials | None:
        creds = used[0] = pairing.credentials
        return None if creds is None else Credentials(creds.room_url, creds.token)

    service = PublisherService(
        bus,
        rt.config,
        credentials,
        on_unauthorized=pairing.report_unauthorized,
        on_status=lambda text, degraded: rt.status(text, degraded=degraded),
    )
    rt.stack.push_async_callback(service.aclose)
    pairing.serve()
    rt.spawn(pairing.run(), "pairing")
    await service.start(rt.spawn)
    rt.ready(service.status()[0])
