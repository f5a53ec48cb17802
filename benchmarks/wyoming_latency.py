"""What the Wyoming service adds to routing: ``router.handle`` alone against a full round trip
(connect, ``transcript``, ``intent`` back) through ``intentkit wyoming``'s service, over loopback,
on the same utterances and the same router, measured side by side in one run.

    python benchmarks/wyoming_latency.py ../shared/datasets/home-assistant/zh-CN.tests.jsonl \\
        [--model models/home-assistant] [--home examples/homeassistant/home.yaml] [--limit 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def main_async(args: argparse.Namespace) -> None:
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient

    from intentkit import Router
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.homeassistant import Home, registry_for
    from intentkit.homeassistant.wyoming import serve_wyoming

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["instruction"] for r in rows][: args.limit or None]
    home = Home.load(args.home)
    router = Router(LlamaCppBackend.from_model_dir(args.model), registry=registry_for(home), fast_path=False)
    router.handle(texts[0], dispatch=False)  # warm: the decoder for this catalog is built once
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = asyncio.Event()
    server = asyncio.create_task(serve_wyoming(router, f"tcp://127.0.0.1:{port}", language=home.language, started=started))
    await started.wait()
    direct, wyoming = [], []
    # Whole passes, direct / Wyoming / direct: interleaving one utterance's two requests would let
    # the second reuse the first's cached prompt. The two direct passes bound the drift.
    for times, through in ((direct, False), (wyoming, True), (direct, False)):
        for text in texts:
            t = time.perf_counter()
            if through:
                async with AsyncTcpClient("127.0.0.1", port) as client:
                    await client.write_event(Transcript(text).event())
                    await client.read_event()
            else:
                await router.ahandle(text, dispatch=False)
            times.append((time.perf_counter() - t) * 1000)
    server.cancel()
    p50_direct, p50_wyoming = statistics.median(direct), statistics.median(wyoming)
    print(
        f"{len(texts)} utterances: router.ahandle p50 {p50_direct:.1f} ms, Wyoming round trip p50 {p50_wyoming:.1f} ms "
        f"(ratio {p50_wyoming / p50_direct:.3f}, +{p50_wyoming - p50_direct:.2f} ms)"
    )
    router.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "home-assistant")
    parser.add_argument("--home", type=Path, default=ROOT / "examples" / "homeassistant" / "home.yaml")
    parser.add_argument("--limit", type=int, default=200)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
