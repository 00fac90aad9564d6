"""One conformance suite, four clients: Python, Node, Go and Java against ONE real server with a token.

The same cases run through each language's thin typed client (image2sdr.client,
client/node/image2sdr.js, client/go/image2sdr, client/java): the same photos give
byte-identical SDRs, a streamed batch comes back in order, a bad request gives the same
status code and field, and a call without the token is UNAUTHENTICATED.  `make clients`
compiles the Go and Java clients once (a no-op when they are up to date); the three
programs run at once, beside the Python client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from image2sdr.client import EncodeItem, Encoding, Image2SdrClient, Image2SdrError
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from tests.helpers.borrowed import BorrowedServer

REPO = Path(__file__).resolve().parent.parent
TOKEN = "conformance-test-token"  # made up for this server alone
BAD_IMAGE = b"\x00garbage\xff" * 10  # not an image: INVALID_ARGUMENT, field "image"
SDR_SIZE, ACTIVE_BITS = 16384, 328
LANGUAGES = ("python", "node", "go", "java")
NODE_CLIENT = REPO / "client" / "node" / "client.js"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service: Server, models_dir: Path) -> Iterator[BorrowedServer]:
    borrowed = BorrowedServer(
        service.encoder, tmp_path_factory.mktemp("conformance"), models_dir, "IMAGE2SDR_CONFORMANCE_TOKEN", TOKEN
    )
    borrowed.start()
    yield borrowed
    borrowed.close()


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is not on PATH: the Node client needs Node.js >= 18")
    return executable


@pytest.fixture(scope="module")
def programs(node: str) -> dict[str, list[str]]:
    """Each non-Python client's conformance program, compiled once (`make clients` installs the toolchains)."""
    subprocess.run(["make", "-s", "clients"], cwd=REPO, check=True, timeout=1200)
    return {
        "node": [node, str(REPO / "client" / "node" / "conformance.js")],
        "go": [str(REPO / "gen" / "bin" / "image2sdr-conformance")],
        "java": [str(REPO / "gen" / "bin" / "image2sdr-conformance-java")],
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("conformance-files")
    bad = folder / "bad.bin"
    bad.write_bytes(BAD_IMAGE)
    images = []
    for name, jpeg in photos.items():
        images.append(folder / f"{name}.jpg")
        images[-1].write_bytes(jpeg)
    return bad, images


@pytest.fixture(scope="module")
def outcomes(
    server: BorrowedServer, programs: dict[str, list[str]], files: tuple[Path, list[Path]]
) -> dict[str, dict[str, Any]]:
    """Every language's outcome of the same cases, the three programs at once beside the Python client."""
    bad, images = files
    argv = [server.address, TOKEN, str(bad), *map(str, images)]
    with ThreadPoolExecutor(len(programs)) as pool:
        running = {language: pool.submit(_run, [*program, *argv]) for language, program in programs.items()}
        results = {"python": _python_outcome(server.address, bad, images)}
        results |= {language: future.result() for language, future in running.items()}
    return results


def _run(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}): {done.stderr}"
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


def _python_outcome(address: str, bad: Path, images: list[Path]) -> dict[str, Any]:
    with Image2SdrClient(address, token=TOKEN) as client, Image2SdrClient(address) as anonymous:
        encode = [_sdr_json(client.encode(image).sdr) for image in images]
        items = [EncodeItem(image, request_id=f"stream-{i}") for i, image in enumerate(images)]
        stream = []
        for answer in client.encode_stream(items):
            assert isinstance(answer, Encoding), answer
            stream.append({"request_id": answer.request_id, "sdr": _sdr_json(answer.sdr), "indexed": answer.indexed})
        return {
            "encode": encode,
            "stream": stream,
            "bad_request": _refusal(client, bad),
            "no_token": _refusal(anonymous, images[0]),
        }


def _sdr_json(sdr: Any) -> dict[str, Any]:
    return {"size": sdr.size, "dimensions": list(sdr.dimensions), "active": list(sdr.active)}


def _refusal(client: Image2SdrClient, image: Path) -> dict[str, Any] | None:
    try:
        client.encode(image)
    except Image2SdrError as error:
        fields = [violation.field for violation in error.field_violations]
        return {"code": error.code.value[0], "message": error.message, "fields": fields}
    return None


def _wire(sdr: dict[str, Any]) -> bytes:
    """The SDR as the proto serialises it: equal bytes here are byte-identical SDRs."""
    return pb.Sdr(size=sdr["size"], dimensions=sdr["dimensions"], active=sdr["active"]).SerializeToString()


# -- the cases -----------------------------------------------------------------------------


def test_the_same_photos_give_byte_identical_sdrs_in_every_language(outcomes: dict[str, dict[str, Any]]) -> None:
    assert set(outcomes) == set(LANGUAGES)
    reference = [_wire(sdr) for sdr in outcomes["python"]["encode"]]
    for sdr in outcomes["python"]["encode"]:
        assert sdr["size"] == SDR_SIZE and sdr["dimensions"] == [128, 128]
        assert len(sdr["active"]) == ACTIVE_BITS and sdr["active"] == sorted(set(sdr["active"]))
    assert len(set(reference)) == len(reference), "different photos must give different SDRs"
    for language in LANGUAGES:
        assert [_wire(sdr) for sdr in outcomes[language]["encode"]] == reference, language


def test_a_streamed_batch_comes_back_in_order_in_every_language(outcomes: dict[str, dict[str, Any]]) -> None:
    reference = [_wire(sdr) for sdr in outcomes["python"]["encode"]]
    ids = [f"stream-{i}" for i in range(len(reference))]
    for language in LANGUAGES:
        stream = outcomes[language]["stream"]
        assert [answer["request_id"] for answer in stream] == ids, language
        assert [_wire(answer["sdr"]) for answer in stream] == reference, language  # each photo its own SDR
        assert not any(answer["indexed"] for answer in stream), language  # nothing asked to store


def test_a_bad_request_gives_the_same_status_code_and_field_in_every_language(
    outcomes: dict[str, dict[str, Any]],
) -> None:
    for language in LANGUAGES:
        refusal = outcomes[language]["bad_request"]
        assert refusal is not None, f"{language}: a request that is not an image was accepted"
        assert refusal["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] and refusal["fields"] == ["image"], language
        assert refusal["message"] == outcomes["python"]["bad_request"]["message"], language


def test_a_call_without_the_token_is_unauthenticated_in_every_language(outcomes: dict[str, dict[str, Any]]) -> None:
    for language in LANGUAGES:
        refusal = outcomes[language]["no_token"]
        assert refusal is not None, f"{language}: a call without the token was answered"
        assert refusal["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0] and refusal["fields"] == [], language
        assert TOKEN not in refusal["message"]


# -- the Node CLI (client/node/client.js), on the same server ---------------------------------


def test_node_cli_encodes_streams_in_order_finds_similar_and_duplicates(
    node: str, server: BorrowedServer, files: tuple[Path, list[Path]], programs: dict[str, list[str]]
) -> None:
    _, images = files
    argv = [node, str(NODE_CLIENT), server.address, *map(str, images), "--token", TOKEN]
    done = subprocess.run(
        [*argv, "--id-prefix", "node-test/", "--remove", "-k", "5"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"node client failed ({done.returncode}): {done.stderr}"
    result = json.loads(done.stdout)

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

    # FindDuplicates of the first image's bytes finds its stored copy.
    duplicates = result["duplicates"]
    assert len(duplicates["fingerprint"]["sha256"]) == 64 and int(duplicates["fingerprint"]["phash"]) >= 0
    copies = {copy["id"]: copy for copy in duplicates["copies"]}
    assert copies[similar["id"]]["kind"] == "DUPLICATE_KIND_SAME_BYTES"
    assert copies[similar["id"]]["phash_distance"] == 0
    assert int(duplicates["thresholds"]["max_phash_distance"]) >= 0

    without_token = [node, str(NODE_CLIENT), server.address, str(images[0])]
    refused = subprocess.run(without_token, capture_output=True, text=True, timeout=600, check=False)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and TOKEN not in refused.stderr


# -- the Node client's copies of google/rpc/*.proto ----------------------------------------------


def _definitions(proto: str) -> list[str]:
    lines = (line.split("//")[0].strip() for line in proto.splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("name", ["status.proto", "error_details.proto"])
def test_node_clients_rpc_protos_are_the_googleapis_ones(name: str) -> None:
    import google.rpc  # noqa: PLC0415 - only for its location

    shipped = Path(next(iter(google.rpc.__path__))) / name
    vendored = NODE_CLIENT.parent / "protos" / "google" / "rpc" / name
    assert _definitions(vendored.read_text()) == _definitions(shipped.read_text())
