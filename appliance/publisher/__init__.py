"""The publisher: the kiosk's camera, microphone and data to remote viewers over WebRTC (aiortc).

    daemon.py        `appliance run publisher`: the bus, pairing, the service; READY
    service.py       the parts wired in one place, started in order, stopped in reverse
    call.py          viewers coming and going: limits, signaling per viewer, data channels,
                     push-to-talk floor, call.state
    peer.py          one viewer's RTCPeerConnection: media sections, codec choice, PLI hook
    signaling.py     the WebSocket to the room service (appliance.room.protocol), reconnecting
    channels.py      the data-channel messages, both ways: the contract with viewer.js
    video.py         camera.h264 passed through to every viewer; keyframe requests
    keyframes.py     when to ask the camera for an IDR (pure)
    audio.py         the microphone as Opus, encoded once, for the viewers who listen
    microphone.py    ALSA or simulated capture
    speaker.py       ALSA or null playback of the talking viewer
    events.py        results and alerts to viewers, once each, resumed by seq (pure + paging)
    stats.py         getStats to ViewerStats (pure)
    remote_video.py  a viewer's camera into the call-remote-video ring for the screen

One encode: the camera daemon encodes H.264 once and the publisher only packetises and
encrypts per viewer. The viewer page is appliance/room/static/viewer.{html,js,css}, served by
the room service.
"""
