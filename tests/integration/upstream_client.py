"""A Pullpiri component's client, built from Pullpiri's own statemanager.proto with its planned
RPCs uncommented (test_planned_rpcs.py generates it), calling each of them as such a component
would. Run in its own process: the generated module declares the same protobuf package as the
daemon's stubs, and one process's descriptor pool holds a symbol once.

    python upstream_client.py GENERATED_DIR PORT REQUESTS_JSON

Prints one JSON line per answer: {"rpc": name, "answer": {...}} (protobuf's JSON mapping,
fields at their defaults included), then for the stream {"subscribed": revision} once the
stream is live and {"rpc": "SubscribeToStateChanges", "answer": event} for each event, until
`events` events were printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def main(generated: str, port: int, requests: dict[str, Any]) -> None:
    sys.path.insert(0, generated)
    import grpc  # noqa: PLC0415
    import statemanager_pb2 as pb  # type: ignore[import-not-found]  # noqa: PLC0415
    import statemanager_pb2_grpc as pb_grpc  # type: ignore[import-not-found]  # noqa: PLC0415
    from google.protobuf.json_format import MessageToDict, ParseDict  # noqa: PLC0415

    def show(rpc: str, answer: Any) -> None:
        body = MessageToDict(answer, always_print_fields_with_no_presence=True)
        print(json.dumps({"rpc": rpc, "answer": body}), flush=True)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.StateManagerConnectionStub(channel)
        unary = [
            ("GetResourceState", pb.ResourceStateRequest),
            ("GetResourceStateHistory", pb.ResourceStateHistoryRequest),
            ("ListResourcesByState", pb.ListResourcesByStateRequest),
            ("ForceSynchronization", pb.ForceSynchronizationRequest),
            ("GetRecoveryStatus", pb.RecoveryStatusRequest),
        ]
        for rpc, message in unary:
            for request in requests.get(rpc, []):
                show(rpc, await getattr(stub, rpc)(ParseDict(request, message())))
        subscription = requests.get("SubscribeToStateChanges")
        if subscription is None:
            return
        request = ParseDict(subscription["request"], pb.StateChangeSubscriptionRequest())
        call = stub.SubscribeToStateChanges(request)
        metadata = dict(await call.initial_metadata())
        print(json.dumps({"subscribed": int(metadata["statemanager-revision"])}), flush=True)
        seen = 0
        async for event in call:
            show("SubscribeToStateChanges", event)
            seen += 1
            if seen == subscription["events"]:
                call.cancel()
                return


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])))
