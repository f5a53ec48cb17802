"""Embedding the router in an existing FastAPI app.

The app keeps its own routes; intentkit's service is mounted under ``/intent`` (route API,
OpenAI-compatible endpoints, metrics), and one of the app's own endpoints calls the router
directly. ``uvicorn examples.fastapi_app:app`` or ``python examples/fastapi_app.py``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from intentkit import Router
from intentkit.server import create_app

router = Router.default()


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    yield
    router.close()


app = FastAPI(title="my home hub", lifespan=lifespan)
app.mount("/intent", create_app(router))


@app.get("/status")
async def status() -> dict[str, str]:
    return {"hub": "up"}


@app.post("/voice")
async def voice(utterance: dict[str, str]) -> dict[str, object]:
    """The app's own endpoint: route, then answer in the app's own shape."""
    result = await router.ahandle(utterance.get("text", ""))
    return {"say": result.results[0] if result.results else "好的", "intent": result.intent, "status": result.status.value}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
