"""How values reach a workflow and travel in it (pure): the route's input translator -> workflow input
mappings, and the workflow canvas's connections as edges from each node (used by ``workflow``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.core.scripting import hook_connection_map
from runtime.core.solution.enums import NodeType, PipelineModuleType
from runtime.core.solution.model import Connection, Route, Workflow


@dataclass(frozen=True, slots=True)
class Edge:
    to_type: NodeType
    to_key: str
    event: str | None
    parameter: str | None
    script: str | None = None  # the hook of the connection's mapping script (NuvIoT Connection.Script)


def connections(workflow: Workflow) -> list[tuple[tuple[NodeType, str], tuple[NodeType, str], Connection]]:
    """Every canvas connection as (source node, target node, connection), from both of its ends."""
    nodes: list[tuple[NodeType, str, Sequence[Connection], Sequence[Connection]]] = []
    nodes += [
        (NodeType.INPUT, n.key, n.incoming_connections, n.outgoing_connections) for n in workflow.inputs
    ]
    nodes += [
        (NodeType.ATTRIBUTE, n.key, n.incoming_connections, n.outgoing_connections)
        for n in workflow.attributes
    ]
    nodes += [
        (NodeType.INPUT_COMMAND, n.key, n.incoming_connections, n.outgoing_connections)
        for n in workflow.input_commands
    ]
    nodes += [(NodeType.OUTPUT_COMMAND, n.key, n.incoming_connections, ()) for n in workflow.output_commands]
    nodes += [(NodeType.STATE_MACHINE, n.key, n.incoming_connections, ()) for n in workflow.state_machines]
    nodes += [(NodeType.TIMER, n.key, (), n.outgoing_connections) for n in workflow.timers]
    out: list[tuple[tuple[NodeType, str], tuple[NodeType, str], Connection]] = []
    for ntype, key, incoming, outgoing in nodes:
        out += [((ntype, key), (c.node_type, c.node_key), c) for c in outgoing]
        out += [((c.node_type, c.node_key), (ntype, key), c) for c in incoming]
    return out


def connection_scripts(workflow: Workflow) -> dict[str, str]:
    """NuvIoT ``Connection.Script`` (a mapping script: ``map(value)`` returns the value the target gets), by hook."""
    return {
        hook_connection_map(src[0], src[1], dst[0], dst[1]): c.script
        for src, dst, c in connections(workflow)
        if c.script and c.script.strip()
    }


def edges(workflow: Workflow) -> dict[tuple[NodeType, str], tuple[Edge, ...]]:
    """Canvas connections from both ends (exports list an edge on one side, the other, or both)."""
    found: dict[tuple[NodeType, str], dict[tuple[NodeType, str, str | None], Edge]] = {}
    scripted = connection_scripts(workflow)
    for src, dst, c in connections(workflow):
        event, parameter = c.event, c.parameter or c.input_command_key
        bucket = found.setdefault(src, {})
        key = (dst[0], dst[1], event)
        old = bucket.get(key) or bucket.get((dst[0], dst[1], None))
        if old is not None:
            bucket.pop((old.to_type, old.to_key, old.event), None)
            event, parameter = event or old.event, parameter or old.parameter
        hook = hook_connection_map(src[0], src[1], dst[0], dst[1])
        bucket[(dst[0], dst[1], event)] = Edge(dst[0], dst[1], event, parameter, hook if hook in scripted else None)
    return {src: tuple(b.values()) for src, b in found.items()}


def input_mappings(route: Route, workflow_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """The route's input translator -> workflow mappings as (field key, input key) pairs, in route order;
    only those into ``workflow_key`` when given. Pure and cheap to cache per route."""
    out: list[tuple[str, str]] = []
    for step in route.steps:
        if step.type is not PipelineModuleType.INPUT_TRANSLATOR:
            continue
        for conn in (step.next, *step.secondary):
            target = route.step_by_id.get(conn.to) if conn is not None else None
            if conn is None or target is None or target.type is not PipelineModuleType.WORKFLOW:
                continue
            if workflow_key is not None and target.module != workflow_key:
                continue
            out.extend((f, i) for f, i in conn.mappings.items() if isinstance(i, str) and i)
    return tuple(out)


def mapped_inputs(mappings: tuple[tuple[str, str], ...], values: Mapping[str, object]) -> dict[str, object]:
    """Workflow inputs ``{input key: value}`` from the translator's values through ``mappings``."""
    return {input_key: values[field_key] for field_key, input_key in mappings if field_key in values}


def route_inputs(route: Route, values: Mapping[str, object], workflow_key: str | None = None) -> dict[str, object]:
    """Workflow inputs from the input translator's values, through the route's field -> input mapping."""
    return mapped_inputs(input_mappings(route, workflow_key), values)
