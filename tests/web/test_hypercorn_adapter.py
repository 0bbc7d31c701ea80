"""Every hypercorn internal the adapter relies on is still there, with the shape it expects.

If this fails after an upgrade, read the message: it names each class,
method, parameter or attribute that moved. Do not loosen the test; change
``perpstream/web/hypercorn_adapter.py`` (and the pin in ``pyproject.toml``)
to match the new hypercorn, so pings, cuts and the fast lane keep working.
"""

from __future__ import annotations

import socket
from importlib.metadata import version

import pytest
import trio
from hypercorn.protocol import ProtocolWrapper, ws_stream
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from quart import websocket
from quart_trio import QuartTrio
from trio_websocket import open_websocket_url

from perpstream.web import hypercorn_adapter
from perpstream.web.hypercorn_adapter import BoundPeer, ConnectionServer, InternalsChanged, check_internals
from perpstream.web.server import ConnectionGuard, serve

pytestmark = pytest.mark.e2e


def test_the_installed_hypercorn_is_the_one_the_adapter_was_written_for() -> None:
    assert version("hypercorn") == hypercorn_adapter.TESTED_VERSION


def test_every_required_class_method_and_signature_is_present() -> None:
    check_internals()  # raises InternalsChanged naming what moved


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(self: object, app: object, config: object, context: object, state: object, sock: object) -> None:
        pass

    monkeypatch.setattr(TCPServer, "__init__", renamed)
    with pytest.raises(InternalsChanged, match=r"TCPServer.__init__ takes \(app, config, context, state, sock\)"):
        check_internals()


def test_a_missing_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(WSStream, "_accept")
    with pytest.raises(InternalsChanged, match=r"WSStream._accept is gone"):
        check_internals()


def _app(seen: dict[str, object]) -> QuartTrio:
    app = QuartTrio("adapter-test")

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        seen["client"] = websocket.scope["client"]
        seen["stream"] = websocket.scope["extensions"]["perpstream.stream"]
        await websocket.send("hello")
        await websocket.receive()

    return app


async def test_the_instance_attributes_the_adapter_reads_exist_on_a_live_websocket() -> None:
    seen: dict[str, object] = {}
    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=None)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve(
            _app(seen), host="127.0.0.1", port=0, guard=guard, max_message_bytes=1 << 16,
            shutdown_trigger=shutdown.wait, task_status=task_status))
        port = bound[0][1]
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            assert await ws.get_message() == "hello"
            server = next(iter(guard.streams.values()))
            assert isinstance(server, ConnectionServer)
            objects = {
                "TCPServer": server,
                "ProtocolWrapper": server.protocol,
                "H11Protocol": server.protocol.protocol,
                "H11WSConnection": server.protocol.protocol.connection,
                "WSStream": server.protocol.protocol.stream,
                "Handshake": server.protocol.protocol.stream.handshake,
                "WorkerContext": server.context,
            }
            types = {"ProtocolWrapper": ProtocolWrapper, "H11Protocol": H11Protocol,
                     "H11WSConnection": H11WSConnection, "WSStream": WSStream, "Handshake": Handshake,
                     "WorkerContext": WorkerContext, "TCPServer": TCPServer}
            missing = [f"{name}.{attribute}" for name, attributes in hypercorn_adapter.INSTANCE_ATTRIBUTES.items()
                       for attribute in attributes if not hasattr(objects[name], attribute)]
            assert not missing, f"hypercorn objects no longer have: {missing}"
            assert all(isinstance(objects[name], types[name]) for name in objects)
            # What the guard derives from them.
            assert server.protocol.protocol.stream.state is ASGIWebsocketState.CONNECTED
            assert server.websocket_open and not server.waiting_for_request
            # The stream is bound to its connection, not looked up by address.
            assert isinstance(seen["client"], BoundPeer) and seen["client"].stream is seen["stream"]
            assert guard.stream_of(seen["client"]) is seen["stream"]
            assert tuple(seen["client"]) == ws._stream.socket.getsockname()[:2]  # type: ignore[attr-defined]
            # Compression declined for this connection (no process-wide patch of Handshake).
            assert server.protocol.protocol.stream.handshake.extensions is None
            assert ws_stream.Handshake is Handshake and Handshake.accept.__module__ == ws_stream.__name__
        shutdown.set()


async def test_an_http_keep_alive_connection_is_seen_waiting_for_its_next_request() -> None:
    guard = ConnectionGuard(send_timeout=5.0, idle_timeout=None)
    app = _app({})

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve(
            app, host="127.0.0.1", port=0, guard=guard, max_message_bytes=1 << 16,
            shutdown_trigger=shutdown.wait, task_status=task_status))
        with socket.create_connection(("127.0.0.1", bound[0][1])) as client:
            client.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while not answer.endswith(b"pong"):
                answer += await trio.to_thread.run_sync(client.recv, 4096)
            with trio.fail_after(5):
                while not all(s is not None and s.waiting_for_request for s in guard.streams.values()):
                    await trio.sleep(0.01)
        shutdown.set()
