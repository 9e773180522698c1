"""``nuviot-runtime test-message``: the dry run (services/dryrun.py) of one message against a solution file.

    nuviot-runtime test-message --solution F --listener KEY (--topic T | --path P) [--method M]
                                [--header K=V ...] [--device ID=CONFIG ...] --payload @file|text [--json]

The solution need not be loaded anywhere: the file is read, validated and its scripts compiled here. The
devices are the solution's own (``devices:``) plus any ``--device``. Nothing is saved or sent. Prints one
line per stage (or the JSON answer with ``--json``) on stdout, problems on stderr; exits 0 when the message passes every stage, 1 when it
stops at one, 2 when the solution or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from runtime.core.devices import Device
from runtime.core.errors import SolutionError
from runtime.services.dryrun import DryRunMessage, DryRunRequestError, run_dry
from runtime.solution_cli import _load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solution", required=True, help="solution file (native YAML/JSON or a NuvIoT export)")
    parser.add_argument("--listener", required=True, help="key of the listener the message arrives on")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--topic", help="MQTT/AMQP topic of the message")
    where.add_argument("--path", help="REST path of the message (a query string is allowed)")
    parser.add_argument("--method", help="HTTP method (REST; default POST)")
    parser.add_argument("--header", action="append", default=[], metavar="K=V", help="a header (repeatable)")
    parser.add_argument("--device", action="append", default=[], metavar="ID=CONFIG",
                        help="a device to add to the solution's devices (repeatable)")
    parser.add_argument("--payload", default="", help="the payload: text, or @FILE for a file's bytes")
    parser.add_argument("--json", action="store_true", help="print the JSON answer of POST /pipeline/test")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DryRunRequestError("bad_argument", f"{what} must be KEY=VALUE, not {item!r}")
        out[key.strip()] = value
    return out


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from runtime import logsetup
    from runtime.adapters.scripting.engine import build_solution_scripts

    out = out or sys.stdout
    err = err or sys.stderr
    logsetup.configure("error", "console")  # the dry run's own warnings are its answer, not log lines
    loaded = _load(args.solution, err)  # problems and warnings to stderr: stdout is the answer (--json)
    if loaded is None:
        return 2
    doc = loaded.document
    try:
        scripts = build_solution_scripts(doc)
    except SolutionError as exc:
        for p in exc.problems:
            print(f"{p.path or args.solution}: {p.code} {p.message}", file=err)
        return 2
    try:
        payload = Path(args.payload[1:]).read_bytes() if args.payload.startswith("@") else args.payload.encode()
    except OSError as exc:
        print(f"test-message: cannot read the payload file: {exc.strerror or exc}", file=err)
        return 2
    devices = {d.device_id: Device(d.device_id, d.device_configuration, d.name, d.device_type,
                                   d.primary_access_key.get_secret_value() if d.primary_access_key else None,
                                   d.secondary_access_key.get_secret_value() if d.secondary_access_key else None,
                                   dict(d.properties))
               for d in doc.devices}
    try:
        for device_id, config in _pairs(args.device, "--device").items():
            devices[device_id] = Device(device_id, config)
        message = DryRunMessage(args.listener, payload, args.topic, args.path, args.method,
                              _pairs(args.header, "--header"))
        answer = run_dry(doc, scripts, devices.get, message)
    except DryRunRequestError as exc:
        print(f"test-message: {exc.code}: {exc.message}", file=err)
        return 2
    if args.json:
        out.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_answer(answer, out)
    return 0 if answer["ok"] else 1


def print_answer(answer: dict[str, Any], out: TextIO) -> None:
    for stage in answer["stages"]:
        name = stage["stage"]
        if not stage["ok"]:
            err = stage["error"]
            print(f"{name:<17} STOPPED  {err['code']}: {err['message']}", file=out)
            continue
        for line in _describe(name, stage["output"]):
            print(f"{name:<17} ok       {line}", file=out)
    for warning in answer.get("warnings", []):
        print(f"{'warning':<17}          {warning}", file=out)
    print(f"result: {answer['status']} ({answer['sideEffects']})", file=out)


def _value(v: Any) -> str:
    return orjson.dumps(v).decode()


def _describe(stage: str, output: dict[str, Any]) -> list[str]:
    if stage == "planner":
        return [f"device {output['deviceId']}, message {output['messageId']}, route {output['route']} "
                f"(device configuration {output['deviceConfiguration']})"]
    if stage == "sentinel":
        return [", ".join(output["sentinels"])]
    if stage == "inputtranslator":
        return [f"{f['key']} ({f['type']}) = {_value(f['value'])}" for f in output["fields"]] or ["no fields"]
    if stage == "workflow":
        lines: list[str] = []
        for wf in output["workflows"]:
            for key, ch in wf["attributes"].items():
                lines.append(f"{wf['workflow']}: attribute {key}: {_value(ch['from'])} -> {_value(ch['to'])}")
            for key, ch in wf["stateMachines"].items():
                lines.append(f"{wf['workflow']}: state machine {key}: {_value(ch['from'])} -> {_value(ch['to'])}")
            for cmd in wf["outputCommands"]:
                lines.append(f"{wf['workflow']}: output command {cmd['key']} {_value(cmd['fields'])}")
        return lines or ["no change"]
    if stage == "datastream":
        return [f"would {'update' if w['op'] == 'update' else 'add'} a row of data stream {w['stream']}: "
                f"{_value(w['row'])}" + (f" where {_value(w['where'])}" if "where" in w else "")
                for w in output["wouldWrite"]]
    if stage == "outputtranslator":
        return [f"{m['messageKey']} ({m['contentType']}) -> {', '.join(m['transmitters']) or 'no transmitter'}: "
                f"{m.get('payload') or base64.b64decode(m.get('payloadBase64') or '').hex()}"
                for m in output["messages"]] or ["no outgoing message"]
    if stage == "transmitter":
        return [f"would send {m['messageKey']} with {m['transmitter']} ({m['transmitterType']})"
                + (f" to topic {m['topic']}" if m.get("topic") else "")
                + (f" {m['method']} {m['pathAndQuery']}" if m.get("pathAndQuery") else "")
                for m in output["wouldSend"]] or ["nothing to send"]
    return [_value(output)]
