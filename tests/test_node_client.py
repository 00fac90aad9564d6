"""The Node.js client (client/node/client.js) against the real server: the contract works beyond Python."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
NODE_CLIENT = REPO / "client" / "node" / "client.js"
SDR_SIZE, ACTIVE_BITS = 16384, 328


@pytest.fixture(scope="session")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is not on PATH: the Node client needs Node.js >= 18")
    # Installs @grpc/grpc-js and @grpc/proto-loader from the lock file on first use.
    subprocess.run(["make", "-s", "node-client"], cwd=REPO, check=True, timeout=600)
    return executable


def _run_node_client(node: str, address: str, images: list[Path]) -> dict[str, Any]:
    argv = [node, str(NODE_CLIENT), address, *map(str, images), "--id-prefix", "node-test/", "--remove", "-k", "5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"node client failed ({done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_node_client_encodes_streams_in_order_finds_similar_and_duplicates(
    node: str, service: Any, photos: dict[str, bytes], tmp_path: Path
) -> None:
    images = []
    for name, jpeg in photos.items():
        images.append(tmp_path / f"{name}.jpg")
        images[-1].write_bytes(jpeg)

    result = _run_node_client(node, service.address, images)

    sdr = result["encode"]["sdr"]
    assert sdr["size"] == SDR_SIZE and sdr["dimensions"] == [128, 128]
    active = sdr["active"]
    assert len(active) == ACTIVE_BITS and active == sorted(set(active))
    assert active[0] >= 0 and active[-1] < SDR_SIZE
    assert result["encode"]["request_id"] == "encode-0"

    stream = result["stream"]
    sent = [f"stream-{i}" for i in range(len(images))]
    assert stream["in_order"] and stream["sent"] == sent and stream["received"] == sent
    assert [response["request_id"] for response in stream["responses"]] == sent
    assert all(
        response["indexed"] and len(response["sdr"]["active"]) == ACTIVE_BITS for response in stream["responses"]
    )

    similar = result["similar"]
    assert similar["id"] == f"node-test/{images[0].name}"
    matches = similar["matches"]
    assert matches, "FindSimilar by id found nothing"
    assert similar["id"] not in [match["id"] for match in matches]
    assert [match["overlap"] for match in matches] == sorted((m["overlap"] for m in matches), reverse=True)
    assert similar["space"] == "SPACE_SEMANTIC" and similar["skipped_without_visual"] == 0

    # FindDuplicates of the first image's bytes finds its stored copy (other tests may store more of them).
    duplicates = result["duplicates"]
    assert len(duplicates["fingerprint"]["sha256"]) == 64 and int(duplicates["fingerprint"]["phash"]) >= 0
    copies = {copy["id"]: copy for copy in duplicates["copies"]}
    assert copies[similar["id"]]["kind"] == "DUPLICATE_KIND_SAME_BYTES"
    assert copies[similar["id"]]["phash_distance"] == 0
    assert int(duplicates["thresholds"]["max_phash_distance"]) >= 0


# -- the Node client's copy of google/rpc/status.proto ---------------------------------


def _definitions(proto: str) -> list[str]:
    lines = (line.split("//")[0].strip() for line in proto.splitlines())
    return [line for line in lines if line]


def test_node_clients_status_proto_is_the_googleapis_one() -> None:
    import google.rpc  # noqa: PLC0415 - only for its location

    shipped = Path(next(iter(google.rpc.__path__))) / "status.proto"
    vendored = NODE_CLIENT.parent / "protos" / "google" / "rpc" / "status.proto"
    assert _definitions(vendored.read_text()) == _definitions(shipped.read_text())
