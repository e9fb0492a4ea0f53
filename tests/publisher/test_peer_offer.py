"""The kiosk's offer asks no bandwidth estimate for its camera (peer.without_bandwidth_estimation):
exactly those lines go, in that media section only, and aiortc reads the result back."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCSessionDescription

from appliance.publisher.peer import ABS_SEND_TIME, CAMERA_MLINE, without_bandwidth_estimation


async def offer_like_the_kiosks() -> str:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video", direction="sendonly")  # the camera
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")  # the viewer's camera
        pc.createDataChannel("events")
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


def sections(sdp: str) -> list[list[str]]:
    parts = sdp.split("\r\nm=")
    return [part.split("\r\n") for part in parts[1:]]


async def test_only_the_cameras_bandwidth_estimation_lines_go() -> None:
    before = await offer_like_the_kiosks()
    after = without_bandwidth_estimation(before, CAMERA_MLINE)
    old, new = sections(before), sections(after)
    assert len(old) == len(new) == 4
    camera_old, camera_new = old[CAMERA_MLINE], new[CAMERA_MLINE]
    removed = [line for line in camera_old if line not in camera_new]
    assert removed and all("goog-remb" in line or ABS_SEND_TIME in line for line in removed)
    assert any(ABS_SEND_TIME in line for line in removed)
    assert len([line for line in removed if "goog-remb" in line]) == len(
        [line for line in camera_old if line.startswith("a=rtpmap") and "rtx" not in line]
    )
    assert camera_new == [line for line in camera_old if line not in removed]  # the rest, in order
    assert new[1:] == old[1:]  # the viewer's own camera keeps aiortc's defaults
    assert "goog-remb" in "\n".join(new[2])


async def test_aiortc_takes_the_offer_and_answers_without_them() -> None:
    offer = without_bandwidth_estimation(await offer_like_the_kiosks(), CAMERA_MLINE)
    viewer = RTCPeerConnection()
    try:
        await viewer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await viewer.setLocalDescription(await viewer.createAnswer())
        camera = sections(viewer.localDescription.sdp)[CAMERA_MLINE]
        assert camera[0].startswith("video")
        assert not [line for line in camera if "goog-remb" in line or ABS_SEND_TIME in line]
        assert any(line.startswith("a=rtcp-fb") and "nack" in line for line in camera)  # NACK and PLI stay
    finally:
        await viewer.close()
