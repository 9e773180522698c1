"""The MQTT command channel (CONTRACT §5): retained instance status plus operator verbs over MQTT.

Topics, for ``base = nuviot/instances/{instanceId}``:

- ``{base}/status``: retained ``{state, since, reason}`` (QoS 1), published on every (re)connect and on
  every state change; the last will sets a retained ``{"state": "Offline"}``.
- ``{base}/control/{pause|start|stop|reload}``: a command ``{token, requestId, expiresAt?}``; the answer
  ``{requestId, ok: true, state}`` or ``{requestId, ok: false, error: {code, message}}`` goes to
  ``{base}/control/{verb}/reply`` (QoS 1, not retained).
- ``{base}/commands/{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}`` (when built
  with ``input_commands``): an input command ``{token, requestId, parameters?, method?, expiresAt?}``,
  run as the input-command HTTP server runs it; the answer ``{requestId, ok, status, messageId |
  error: {code, message}}`` goes to the same topic + ``/reply``. See ``mqtt_requests``.

Decisions:

- One client id for the channel's whole life (``client_id`` or ``nuviot-runtime-{instanceId}-{random}``),
  so a reconnect takes over a half-open old session at the broker instead of letting that session's
  last will (``Offline``) land after our fresh status.
- A fresh ``aiomqtt.Client`` per connection attempt. aiomqtt 2.5's client is reusable, but after an
  unexpected disconnect its ``_connected`` future stays resolved, so re-entering it returns before the
  broker's CONNACK; a new client (same id, same will) does not have that problem.
- A persistent session (``clean_session=False``) with QoS 1 subscriptions: a command published while the
  connection was down is delivered once it is back (the broker keeps the session for our client id; give
  ``client_id`` a stable value to keep it across restarts) and runs then, unless its ``expiresAt`` has
  passed. The same ``requestId`` on the same topic within a minute runs once; the reply repeats.
  Retained messages on the command topics are never run.
- Commands run one at a time, in arrival order (the supervisor runs operations one at a time anyway).
- The token is checked (in constant time) before the verb; the log never contains a presented or the
  real token, nor a raw payload. An unreadable command is answered with ``bad_request`` when a
  ``requestId`` can be recovered (also from malformed or oversized payloads, by a bounded pattern search
  of the first 1 KiB), else it is only logged.
- Cancellation of ``run()``: if a connection is up and the current state (``control.snapshot()``) has
  not been published yet, it is published (bounded by ``final_timeout``), then the client disconnects
  cleanly, so the broker drops the will and the retained status stays what the supervisor last set
  (``Stopped`` on a clean shutdown). Nothing else is published after cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import aiomqtt
import orjson
import structlog
from pydantic import SecretStr

from runtime.adapters.command.mqtt_requests import (
    MqttInputCommands,
    RecentReplies,
    Refused,
    RequestId,
    input_reply,
    read_request,
    refused_input_reply,
)
from runtime.adapters.mqtt_client import make_client
from runtime.adapters.mqtt_url import MqttUrl, parse_mqtt_url
from runtime.adapters.supervision import supervise
from runtime.core.backoff import Backoff
from runtime.core.errors import CommandRefusedError
from runtime.core.lifecycle import Verb
from runtime.core.ports import ControlPort, StateChange
from runtime.core.timefmt import iso
from runtime.services.input_commands import InputCommands

log = structlog.get_logger(__name__)
_MQTT_LOGGER = logging.getLogger(__name__ + ".aiomqtt")

OFFLINE_PAYLOAD = b'{"state":"Offline"}'
_QOS = 1
_PENDING_MAX = 256  # state changes waiting to be published; the oldest are dropped beyond this


def status_payload(change: StateChange) -> bytes:
    return orjson.dumps({"state": change.state.value, "since": iso(change.at), "reason": change.reason})


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text}: {_describe(cause)}" if cause is not None and cause is not exc else text


class MqttCommandChannel:
    """Publishes the instance status and answers operator verbs over MQTT until cancelled.

    ``run()`` never raises except ``CancelledError``: a missing, restarting or vanishing broker is retried
    with full-jitter backoff (reset after each healthy connection). ``connected`` and ``last_error``
    (why the channel is not connected right now; ``None`` while connected) are for ``GET /status``.
    """

    def __init__(
        self,
        url: str | MqttUrl,
        instance_id: str,
        control: ControlPort,
        token: SecretStr,
        *,
        backoff: Backoff | None = None,
        max_payload: int = 64 * 1024,
        client_id: str | None = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        final_timeout: float = 2.0,
        input_commands: InputCommands | None = None,
    ) -> None:
        if not instance_id or any(c in instance_id for c in "+#\0"):
            raise ValueError(f"instance id {instance_id!r} cannot be used in an MQTT topic")
        if not token.get_secret_value():
            raise ValueError("the MQTT command channel needs a non-empty token")
        self._url = parse_mqtt_url(url) if isinstance(url, str) else url
        self._control = control
        self._token = token.get_secret_value().encode("utf-8", "surrogatepass")
        self._backoff = backoff if backoff is not None else Backoff()
        self._max_payload = max_payload
        self._client_id = client_id or f"nuviot-runtime-{instance_id}-{secrets.token_hex(4)}"
        self._keepalive = keepalive
        self._timeout = timeout
        self._final_timeout = final_timeout
        base = f"nuviot/instances/{instance_id}"
        self.status_topic = f"{base}/status"
        self.control_filter = f"{base}/control/+"
        self._control_prefix = f"{base}/control/"
        self._inputs = MqttInputCommands(input_commands, base) if input_commands is not None else None
        self._replies = RecentReplies()
        self._pending: asyncio.Queue[StateChange] = asyncio.Queue(maxsize=_PENDING_MAX)
        self._status_lock = asyncio.Lock()
        self._last_sent: StateChange | None = None
        self._connected = False
        self._healthy = False  # the current attempt got as far as subscribed + status published
        self._last_error: str | None = None
        self._running = False

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def status(self) -> dict[str, Any]:
        """For ``GET /status``; the URL is shown without its password."""
        return {"url": str(self._url), "connected": self._connected, "lastError": self._last_error}

    # ------------------------------------------------------------------ supervision
    async def run(self) -> None:
        if self._running:
            raise RuntimeError("MqttCommandChannel.run() is already running")
        self._running = True
        unsubscribe = self._control.add_state_listener(self._on_state_change)
        try:
            await supervise(self._session, role="command_channel", backoff=self._backoff,
                            connection_errors=(aiomqtt.MqttError,), on_loss=self._on_loss, broker=str(self._url))
        finally:
            unsubscribe()
            self._connected = False
            self._running = False

    def _on_loss(self, error: str) -> str:
        """After a session: record why the channel is down and name the warning ``supervise`` logs."""
        self._last_error = error
        healthy, self._healthy = self._healthy, False
        return "command_channel_disconnected" if healthy else "command_channel_connect_failed"

    def _make_client(self) -> aiomqtt.Client:
        return make_client(
            self._url,
            client_id=self._client_id,
            clean_session=False,  # a persistent session: commands sent while down arrive on reconnect
            keepalive=self._keepalive,
            timeout=self._timeout,
            logger=_MQTT_LOGGER,
            will=aiomqtt.Will(self.status_topic, OFFLINE_PAYLOAD, qos=_QOS, retain=True),
            max_queued_incoming_messages=_PENDING_MAX,
        )

    async def _session(self) -> None:
        """One connection: connect, serve until it breaks (MqttError) or we are cancelled, disconnect."""
        client = self._make_client()
        self._last_sent = None
        await self._enter(client)
        try:
            await self._serve(client)
        except asyncio.CancelledError:
            await self._publish_latest(client)
            raise
        finally:
            self._connected = False
            await self._close(client)

    async def _enter(self, client: aiomqtt.Client) -> None:
        # aiomqtt 2.5 cannot abort a connect cleanly: cancelling __aenter__ while it waits for CONNACK
        # breaks paho's disconnect callback and leaves the socket and paho's misc task behind. So when we
        # are cancelled while connecting, give the attempt ``final_timeout`` to finish (then publish the
        # latest state and disconnect cleanly); otherwise close its socket first (__aexit__ sends
        # DISCONNECT and closes it) and only then cancel it.
        entering = asyncio.get_running_loop().create_task(client.__aenter__(), name="command:mqtt:connect")
        try:
            await asyncio.shield(entering)
        except asyncio.CancelledError:
            try:
                async with asyncio.timeout(self._final_timeout):
                    await asyncio.shield(entering)
            except aiomqtt.MqttError:
                pass
            except TimeoutError:
                await self._abandon(client, entering)
            else:
                await self._publish_latest(client)
                await self._close(client)
            raise

    async def _abandon(self, client: aiomqtt.Client, entering: asyncio.Task[aiomqtt.Client]) -> None:
        # Known limit: a TCP connect still hanging in aiomqtt's worker thread (an unreachable host) cannot
        # be stopped; paho gives up on it after its own connect timeout.
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(self._final_timeout):
                await client.__aexit__(None, None, None)
        entering.cancel()
        with contextlib.suppress(aiomqtt.MqttError, asyncio.CancelledError):
            await entering

    async def _close(self, client: aiomqtt.Client) -> None:
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            log.debug("command_channel_disconnect_failed", error=_describe(exc))

    async def _serve(self, client: aiomqtt.Client) -> None:
        filters = [self.control_filter] + ([self._inputs.filter] if self._inputs is not None else [])
        codes = await client.subscribe([(f, _QOS) for f in filters])
        if any(getattr(code, "value", code) >= 0x80 for code in codes):
            raise aiomqtt.MqttError(f"the broker refused the subscription to {', '.join(filters)}")
        self._drain_pending()  # superseded by the snapshot below
        await self._publish_status(client, self._control.snapshot())
        self._connected = True
        self._healthy = True
        self._last_error = None
        self._backoff.reset()
        log.info("command_channel_connected", broker=str(self._url), client_id=self._client_id)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publish_changes(client), name="command:mqtt:status")
            async for message in client.messages:
                await self._on_message(client, message)
                _raise_swallowed_cancel()

    # ------------------------------------------------------------------ status
    def _on_state_change(self, change: StateChange) -> None:
        if self._inputs is not None:
            self._inputs.state_changed()
        if self._pending.full():
            self._pending.get_nowait()
        self._pending.put_nowait(change)

    def _drain_pending(self) -> None:
        while not self._pending.empty():
            self._pending.get_nowait()

    async def _publish_changes(self, client: aiomqtt.Client) -> None:
        while True:
            change = await self._pending.get()
            await self._publish_status(client, change)
            _raise_swallowed_cancel()  # else a stop that lands on a PUBACK leaves this task waiting for ever

    async def _publish_status(self, client: aiomqtt.Client, change: StateChange) -> None:
        async with self._status_lock:
            self._last_sent = change
            await client.publish(self.status_topic, status_payload(change), qos=_QOS, retain=True)

    async def _publish_latest(self, client: aiomqtt.Client) -> None:
        """On cancellation: publish the current state unless it is already out."""
        latest = self._control.snapshot()
        if latest == self._last_sent:
            return
        try:
            async with asyncio.timeout(self._final_timeout):
                await self._publish_status(client, latest)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("command_channel_final_status_failed", state=latest.state.value, error=_describe(exc))

    # ------------------------------------------------------------------ commands
    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if self._inputs is not None and self._inputs.matches(topic):
            name, is_input = self._inputs.name(topic), True
        elif topic.startswith(self._control_prefix):
            name, is_input = topic[len(self._control_prefix) :], False
            if not name or "/" in name:  # e.g. our own .../reply (the + filter excludes them anyway)
                return
        else:
            return
        if message.retain:
            log.warning("command_ignored", command=name, reason="retained messages are not commands")
            return
        payload = message.payload
        if isinstance(payload, (bytes, bytearray)):
            raw = bytes(payload)
        else:
            raw = b"" if payload is None else str(payload).encode()
        try:
            await self._run_command(client, topic, name, is_input, raw)
        except aiomqtt.MqttError:
            raise
        except Exception:  # a bug in handling one command must not stop the channel
            log.exception("command_crashed", command=name)

    async def _run_command(self, client: aiomqtt.Client, topic: str, name: str, is_input: bool, raw: bytes) -> None:
        reply_topic = f"{topic}/reply"
        try:
            body, request_id = read_request(raw, max_payload=self._max_payload, token=self._token, now=time.time())
        except Refused as refused:
            log.warning("command_rejected", **{"command" if is_input else "verb": name},
                        request_id=refused.request_id, code=refused.code, reason=refused.message)
            if refused.request_id is not None:
                reply = (refused_input_reply(refused.request_id, refused) if is_input
                         else _error(refused.request_id, refused.code, refused.message))
                await client.publish(reply_topic, orjson.dumps(reply), qos=_QOS)
            return
        repeated = self._replies.get(topic, request_id)
        if repeated is not None:
            log.info("command_repeated", command=name, request_id=request_id)
            await client.publish(reply_topic, repeated, qos=_QOS)
            return
        if is_input:
            assert self._inputs is not None
            outcome = await self._inputs.run(topic, body, request_id)
            (log.info if outcome.accepted else log.warning)(
                "input_command_answered", command=name, request_id=request_id, status=outcome.status,
                code=outcome.code, message_id=outcome.message_id)
            reply, ran = input_reply(request_id, outcome), outcome.ran
        else:
            reply, ran = await self._run_verb(name, request_id)
        encoded = orjson.dumps(reply)
        if ran:
            self._replies.remember(topic, request_id, encoded)
        await client.publish(reply_topic, encoded, qos=_QOS)

    async def _run_verb(self, verb_name: str, request_id: RequestId) -> tuple[dict[str, Any], bool]:
        try:
            verb = Verb(verb_name)
        except ValueError:
            expected = ", ".join(v.value for v in Verb)
            message = f"unknown verb {verb_name!r}; expected one of {expected}"
            log.warning("command_rejected", verb=verb_name, request_id=request_id, code="unknown_verb", reason=message)
            return _error(request_id, "unknown_verb", message), False
        try:
            state = await self._control.control(verb)
        except CommandRefusedError as exc:
            log.info(
                "command_refused", verb=verb.value, request_id=request_id, code=exc.code, reason=exc.message
            )
            return _error(request_id, exc.code, exc.message), False
        except Exception:
            log.exception("command_failed", verb=verb.value, request_id=request_id)
            return _error(request_id, "internal_error", f"{verb.value} failed"), False
        log.info("command_accepted", verb=verb.value, request_id=request_id, state=state.value)
        return {"requestId": request_id, "ok": True, "state": state.value}, True


def _raise_swallowed_cancel() -> None:
    """Python 3.11's asyncio.wait_for (under aiomqtt's publish) drops a cancel that arrives as the PUBACK does;
    the cancel is still counted on the task, so honour it after each publish."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _error(request_id: RequestId, code: str, message: str) -> dict[str, Any]:
    return {"requestId": request_id, "ok": False, "error": {"code": code, "message": message}}
