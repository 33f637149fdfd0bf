"""Calling the StateManager gRPC service's handlers in process, as grpc.aio would: a servicer
context whose `abort` raises, and a node's container list built from plain tuples."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import grpc

from statemanager.adapters.stateservice import StateService
from statemanager.proto import statemanager_pb2 as pb

from support.documents import MODEL_ANNOTATION


class Aborted(Exception):
    """What `context.abort` raises: the status code and details the node would receive."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Context:
    """The part of a grpc.aio servicer context the service uses: abort."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)


def container_list(node: str, containers: Iterable[tuple[str, str, str, str]]) -> pb.ContainerList:
    """A node's list: (container id, model, status, exit code) each, named as Pullpiri names."""
    return pb.ContainerList(
        node_name=node,
        containers=[
            pb.ContainerInfo(
                id=cid,
                names=[f"{model}_{cid}"],
                state={"Status": status, "ExitCode": code},
                annotation={MODEL_ANNOTATION: model},
            )
            for cid, model, status, code in containers
        ],
    )


async def send_list(service: StateService, request: pb.ContainerList) -> Any:
    return await service.SendChangedContainerList(request, Context())  # type: ignore[arg-type]
