"""``videoconf bot``: join a meeting as a participant, optionally publish synthetic media, and
print a JSON report of what was received (per remote track: frames decoded and verified, frame
rate, freezes, packets lost)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp


class BotError(Exception):
    pass


async def _api(http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        data = await response.json(content_type=None)
        if response.status >= 300:
            error = (data or {}).get("error", {})
            raise BotError(f"{method} {url}: {response.status} {error.get('code')}: {error.get('message')}")
        return data


async def room_token(api: str, email: str, password: str, meeting: str, passcode: str | None, name: str | None) -> dict[str, Any]:
    """Sign in, find the meeting by id or code, join it: the join response (token, signaling URL)."""
    api = api.rstrip("/")
    async with aiohttp.ClientSession() as http:
        login = await _api(http, "POST", f"{api}/api/auth/login", body={"email": email, "password": password})
        token = login["access_token"]
        meeting_id = meeting
        if "-" in meeting and len(meeting) <= 14:
            meeting_id = (await _api(http, "GET", f"{api}/api/meetings/by-code/{meeting}", token))["id"]
        body: dict[str, Any] = {}
        if passcode:
            body["passcode"] = passcode
        if name:
            body["display_name"] = name
        return await _api(http, "POST", f"{api}/api/meetings/{meeting_id}/join", token, body)


async def run_bot(args: argparse.Namespace) -> dict[str, Any]:
    from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
    from clients.sdk.participant import Participant

    if args.token:
        signaling_url, token = args.signaling_url, args.token
        if not signaling_url:
            raise BotError("--token needs --signaling-url")
    else:
        joined = await room_token(args.api, args.email, args.password, args.meeting, args.passcode, args.name)
        signaling_url, token = joined["signaling_url"], joined["token"]
    participant = Participant(signaling_url, token, ice_servers=[], video_codec=args.codec)
    try:
        await participant.connect()
        if args.publish:
            await participant.publish([
                (PatternVideoTrack(args.width, args.height, fps=args.fps), "camera"),
                (ToneAudioTrack(frequency=args.tone), "microphone"),
            ])
        await asyncio.sleep(args.duration)
        return await participant.report(tone_frequency=args.tone)
    finally:
        await participant.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="control API base URL")
    parser.add_argument("--email")
    parser.add_argument("--password")
    parser.add_argument("--meeting", help="meeting id or code")
    parser.add_argument("--passcode")
    parser.add_argument("--name", help="display name in the meeting")
    parser.add_argument("--token", help="a room token instead of signing in")
    parser.add_argument("--signaling-url", help="with --token")
    parser.add_argument("--publish", action="store_true", help="publish a verifiable video pattern and a tone")
    parser.add_argument("--codec", choices=("VP8", "H264"), help="video codec to publish")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--tone", type=float, default=440.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to stay")


def cmd_bot(args: argparse.Namespace) -> int:
    if not args.token and not (args.email and args.password and args.meeting):
        print("videoconf bot: give --email, --password and --meeting, or --token and --signaling-url", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run_bot(args))
    except (BotError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"videoconf bot: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0
