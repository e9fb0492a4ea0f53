"""The network bench's viewer command line, as the bench builds it and the viewer parses it."""

from __future__ import annotations

import pytest

from appliance.bench.netviewer import arguments
from appliance.bench.network import ROOM_URL, viewer_argv


@pytest.mark.parametrize("invite", ["abc123", "-Zk3q_9", "--looks-like-an-option"])
def test_any_invite_token_reaches_the_viewer(invite: str) -> None:
    """Invite tokens are URL-safe base64, which may begin with "-": passed as a separate word,
    argparse took it for an option and the viewer exited at once (one bench run in 64)."""
    argv = viewer_argv(invite)
    assert argv[1:3] == ["-m", "appliance.bench.netviewer"]
    args = arguments(argv[3:])
    assert args.invite == invite
    assert args.base == ROOM_URL
