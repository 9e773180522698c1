"""The output translator: mapping, payload by content type, tokens, and which transmitters send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.adapters.scripting.engine import build_workflow_scripts
from runtime.core.errors import StageError
from runtime.core.pipeline.output import build_outgoing
from runtime.core.solution.model import SolutionDocument


def document(**message_extra: Any) -> SolutionDocument:
    return SolutionDocument.model_validate(
        {
            "solution": {
                "key": "s",
                "planner": {"key": "p"},
                "deviceConfigurations": [
                    {
                        "key": "cfg",
                        "routes": [
                            {
                                "key": "r",
                                "messageDefinition": "in",
                                "steps": [
                                    {
                                        "id": "w",
                                        "type": "workflow",
                                        "module": "wf",
                                        "next": {
                                            "to": "o",
                                            "mappings": {
                                                "setfan": {
                                                    "outgoingMessage": "fan",
                                                    "fieldMappings": {"state": "on"},
                                                },
                                                "ghost": {"outgoingMessage": "nosuchmessage"},
                                            },
                                        },
                                    },
                                    {
                                        "id": "o",
                                        "type": "outputtranslator",
                                        "module": "msg",
                                        "next": {"to": "t1", "mappings": {"fan": ""}},
                                        "secondary": [
                                            {"to": "t2", "mappings": {"ID-FAN": ""}},
                                            {"to": "t3", "mappings": {"other": ""}},
                                        ],
                                    },
                                    {"id": "t1", "type": "transmitter", "module": "mqttout"},
                                    {"id": "t2", "type": "transmitter", "module": "restout"},
                                    {"id": "t3", "type": "transmitter", "module": "nobody"},
                                ],
                            }
                        ],
                    }
                ],
            },
            "messages": [
                {"key": "in", "messageId": "in"},
                {
                    "key": "fan",
                    "id": "ID-FAN",
                    "messageId": "fancmd",
                    "messageDirection": "outgoing",
                    "topic": "devices/~deviceid~/commands/~messageid~",
                    "pathAndQueryString": "/d/~deviceid~?m=~messageid~",
                    "headers": [{"name": "X-Device", "value": "~deviceid~"}],
                    "fields": [{"key": "on"}, {"key": "speed"}],
                    **message_extra,
                },
            ],
            "workflows": [{"key": "wf", "outputCommands": [{"key": "setfan"}]}],
        }
    )


def run(doc: SolutionDocument, commands: list[tuple[str, dict[str, Any]]], scripts: Any = None) -> Any:
    route = doc.device_configuration_by_key["cfg"].route_by_key["r"]
    return build_outgoing(doc, route, "gh-1", commands, scripts)


def test_json_without_script_is_the_mapped_fields_with_tokens_replaced() -> None:
    out = run(document(), [("setfan", {"state": True, "speed": 3})])
    ((msg, transmitters),) = out.messages
    assert json.loads(msg.payload) == {"on": True, "speed": 3}
    assert msg.topic == "devices/gh-1/commands/fancmd"
    assert msg.path_and_query == "/d/gh-1?m=fancmd"
    assert msg.headers == (("X-Device", "gh-1"),)
    assert msg.method == "GET"
    assert [t.id for t in transmitters] == ["t1", "t2"]  # by key on next, by NuvIoT id on a secondary


def test_unmapped_and_unknown_commands_are_warnings() -> None:
    out = run(document(), [("nothing", {}), ("ghost", {})])
    assert out.messages == []
    assert len(out.warnings) == 2


@pytest.mark.parametrize(
    ("extra", "payload", "media"),
    [
        ({"contentType": "nocontent", "restMethod": "post"}, b"", ""),
        ({"contentType": "delimited", "delimiter": ";"}, b"true;3", "text/plain"),
        ({"contentType": "xml"}, b"<fancmd><on>true</on><speed>3</speed></fancmd>", "application/xml"),
    ],
)
def test_payload_by_content_type(extra: dict[str, Any], payload: bytes, media: str) -> None:
    ((msg, _),) = run(document(**extra), [("setfan", {"state": True, "speed": 3})]).messages
    assert (msg.payload, msg.content_type) == (payload, media)


def test_the_output_message_script_builds_the_payload_and_its_errors_are_stage_errors() -> None:
    doc = document(
        outputMessageScript="function getOutputMessage() { return {fan: Fields.on ? 'ON' : 'OFF'}; }"
    )
    scripts = build_workflow_scripts(doc, doc.workflow_by_key["wf"])
    ((msg, _),) = run(doc, [("setfan", {"state": False})], scripts).messages
    assert json.loads(msg.payload) == {"fan": "OFF"}

    bad = document(outputMessageScript="function getOutputMessage() {\n  return Fields.on.x.y;\n}")
    with pytest.raises(StageError) as info:
        run(bad, [("setfan", {})], build_workflow_scripts(bad, bad.workflow_by_key["wf"]))
    assert (info.value.stage, info.value.code) == ("outputtranslator", "script_error")
    assert info.value.detail.startswith("message fan / getOutputMessage, line 2: TypeError")
