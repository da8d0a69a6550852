"""A user's first contact: grpcurl through server reflection, no .proto files."""

import asyncio
import json
import pathlib
import shutil
import sys

import pytest

from tests.router.conftest import running_router

_GRPCURL = shutil.which("grpcurl") or str(
    pathlib.Path(sys.executable).parent / "grpcurl"
)

pytestmark = pytest.mark.skipif(
    not pathlib.Path(_GRPCURL).exists(),
    reason="grpcurl is not installed (pip extra dev)",
)


async def grpcurl(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        _GRPCURL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, out.decode()


async def test_grpcurl_lists_describes_and_streams_a_generation(tmp_path, upstreams):
    async with running_router(
        tmp_path, upstreams["providers"], api_keys="k-1=acme", auth_required=True
    ) as (_, _, server):
        code, listing = await grpcurl("-plaintext", server.address, "list")
        assert code == 0, listing
        assert "koverage.router.v1.RouterService" in listing.split()

        code, described = await grpcurl(
            "-plaintext",
            server.address,
            "describe",
            "koverage.router.v1.GenerateRequest",
        )
        assert (
            code == 0
            and "repeated .koverage.router.v1.ChatMessage messages" in described
        )

        request = {
            "model": "sim/steady",
            "messages": [{"role": "ROLE_USER", "content": "hello"}],
        }
        code, out = await grpcurl(
            "-plaintext",
            "-H",
            "authorization: Bearer k-1",
            "-d",
            json.dumps(request),
            server.address,
            "koverage.router.v1.RouterService/Generate",
        )
        assert code == 0, out
        events = [
            json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")
        ]
        assert "delta" in events[0]
        assert events[-1]["summary"]["model"] == "sim/steady"
        assert events[-1]["summary"]["simulated"] is True

        code, refused = await grpcurl(
            "-plaintext",
            "-d",
            json.dumps(request),
            server.address,
            "koverage.router.v1.RouterService/Generate",
        )
        assert code != 0 and "Unauthenticated" in refused
