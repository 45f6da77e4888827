"""The released checkpoints in a Hugging Face cache built on disk: found without network, clear fast failures
offline, and a verified download through a stand-in for the Hub. No test here opens a connection outside
this machine."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from urllib.parse import unquote

import httpx2
import pytest
from huggingface_hub import HfFileMetadata, constants
from huggingface_hub.errors import RemoteEntryNotFoundError
from huggingface_hub.utils import tqdm as hf_tqdm

from codi import hub
from codi.hub import (
    FP16_FOLDER,
    OFFICIAL_FILES,
    OFFICIAL_REPO,
    WeightsNotFoundError,
    download_official,
    fetch_official,
    format_size,
    looks_complete,
    official_download_size,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SIZES = {name: 1000 + 100 * i for i, name in enumerate(OFFICIAL_FILES)}  # small stand-ins, each a distinct size


def build_cache(root: Path, files: dict[str, int]) -> Path:
    """A Hugging Face cache holding `files` ({repository path: bytes}) of ZinengTang/CoDi at COMMIT (main)."""
    repo = root / f"models--{OFFICIAL_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for filename, size in files.items():
        path = repo / "snapshots" / COMMIT / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
    return root


def fp16_files(*names: str) -> dict[str, int]:
    return {f"{FP16_FOLDER}/{name}": SIZES[name] for name in names}


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network was used")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any probe, Hub call or socket connection fails the test."""
    for name in ("hf_hub_download", "hub_reachable", "get_hf_file_metadata"):
        monkeypatch.setattr(hub, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def online_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's offline mode off (conftest turns it on for every other test)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed: connections are refused at once


def test_sizes_of_the_release() -> None:
    assert format_size(official_download_size("fp16")) == "11.6 GB"
    assert format_size(official_download_size("fp32")) == "36.5 GB"
    assert [format_size(n) for n in (907_848_517, 12_396_125_125, 1_500, 512)] == [
        "907.8 MB",
        "12.4 GB",
        "1.5 kB",
        "512 B",
    ]
    with pytest.raises(ValueError, match="bf16"):
        official_download_size("bf16")


def test_looks_complete_uses_exact_sizes_only_where_known() -> None:
    assert looks_complete(4_097_188_355, "CoDi_text_diffuser.pth", "fp16")
    assert not looks_complete(4_097_188_354, "CoDi_text_diffuser.pth", "fp16")
    assert looks_complete(1, "CoDi_video_diffuser_8frames.pth", "fp16")  # fp16 video: size estimated
    assert not looks_complete(0, "CoDi_video_diffuser_8frames.pth", "fp16")
    assert looks_complete(11_190_012_683, "CoDi_video_diffuser_8frames.pth", "fp32")


@pytest.mark.usefixtures("online_mode", "no_network")
def test_cached_files_come_back_in_load_order_without_network(tmp_path: Path) -> None:
    cache = build_cache(tmp_path, fp16_files(*OFFICIAL_FILES) | {name: 7 for name in OFFICIAL_FILES})
    weights = fetch_official("fp16", cache_dir=cache)
    snapshot = cache / "models--ZinengTang--CoDi" / "snapshots" / COMMIT
    assert weights.files == tuple(snapshot / FP16_FOLDER / name for name in OFFICIAL_FILES)
    assert weights.variant == "fp16"
    assert fetch_official("fp32", cache_dir=cache).files == tuple(snapshot / name for name in OFFICIAL_FILES)
    assert fetch_official("fp16", cache_dir=cache, revision=COMMIT).files == weights.files


@pytest.mark.usefixtures("online_mode", "no_network")
def test_a_cached_root_file_stands_in_for_its_fp16_copy(tmp_path: Path) -> None:
    cache = build_cache(tmp_path, fp16_files(*OFFICIAL_FILES[:3]) | {OFFICIAL_FILES[3]: 9})
    files = fetch_official("fp16", cache_dir=cache).files
    assert [p.parent.name for p in files] == [FP16_FOLDER] * 3 + [COMMIT]


@pytest.mark.usefixtures("no_network")
def test_a_missing_file_offline_fails_at_once_with_the_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = build_cache(tmp_path, fp16_files(*OFFICIAL_FILES[:1], *OFFICIAL_FILES[2:]))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        fetch_official("fp16", cache_dir=cache)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert f"{FP16_FOLDER}/CoDi_text_diffuser.pth not cached" in message
    assert "CoDi_encoders.pth" not in message.splitlines()[0]  # only the missing file is named as missing
    assert str(cache) in message and "offline mode is on" in message
    assert "python -m codi download" in message and "11.6 GB" in message
    assert f"hf download {OFFICIAL_REPO} {FP16_FOLDER}/CoDi_encoders.pth" in message


@pytest.mark.usefixtures("no_network")
def test_local_files_only_is_offline_too(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"local_files_only=True"):
        fetch_official("fp16", cache_dir=tmp_path, local_files_only=True)


@pytest.mark.usefixtures("online_mode")
def test_an_unreachable_hub_fails_in_seconds_not_retries(tmp_path: Path, monkeypatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "hf_hub_download", refuse)  # the probe must stop us before any Hub call
    monkeypatch.setattr(hub, "get_hf_file_metadata", refuse)
    cache = build_cache(tmp_path, fp16_files(*OFFICIAL_FILES[:3]))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        fetch_official("fp16", cache_dir=cache)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert f"{FP16_FOLDER}/CoDi_video_diffuser_8frames.pth not cached" in message
    assert f"cannot be reached: could not connect to {endpoint}" in message
    assert "python -m codi download" in message and "11.6 GB" in message
    with pytest.raises(WeightsNotFoundError, match="cannot be reached"):
        download_official("fp16", cache_dir=cache)


@pytest.mark.usefixtures("no_network")
def test_fp32_messages_quote_the_fp32_download(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        fetch_official("fp32", cache_dir=tmp_path, local_files_only=True)
    message = str(info.value)
    assert "python -m codi download --precision fp32" in message and "36.5 GB" in message
    assert "11.6 GB" not in message and FP16_FOLDER not in message
    assert f"hf download {OFFICIAL_REPO} CoDi_encoders.pth" in message


def test_the_probe_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(address: tuple[str, int], timeout: float) -> socket.socket:
        time.sleep(2)
        raise OSError("too late")

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listening = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert hub.hub_reachable(listening)
        assert not hub.hub_reachable(f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("HTTPS_PROXY", listening)  # through a proxy, the proxy is what must answer
        assert hub.hub_reachable("https://hub.invalid")
        monkeypatch.setattr(socket, "create_connection", hang)
        start = time.perf_counter()
        assert not hub.hub_reachable(listening, timeout=0.2)
        assert time.perf_counter() - start < 1


class FakeHub:
    """Stands in for the Hub: answers HEAD requests for `files` ({repository path: bytes}) and 'downloads' them
    into the cache, advancing hf_hub_download's progress bar class as huggingface_hub does (disabled, as
    without a terminal)."""

    def __init__(
        self,
        files: dict[str, int],
        listed_sizes: dict[str, int] | None = None,
        listed_sha: dict[str, str] | None = None,
    ) -> None:
        self.files = files
        self.listed = {**files, **(listed_sizes or {})}
        # an LFS file's ETag is its content's sha256 (the stand-in files are zeros)
        self.sha = {name: hashlib.sha256(bytes(size)).hexdigest() for name, size in files.items()}
        self.sha |= listed_sha or {}
        self.downloaded: list[str] = []
        self.asked: list[str] = []  # the revision of each HEAD request
        self.fetched_at: list[str | None] = []  # the revision of each download

    def get_hf_file_metadata(self, url: str, timeout: float, endpoint: str) -> HfFileMetadata:
        assert url.startswith(f"{endpoint}/{OFFICIAL_REPO}/resolve/") and timeout <= 10
        revision, filename = unquote(url.split("/resolve/", 1)[1]).split("/", 1)
        assert revision in ("main", COMMIT)
        self.asked.append(revision)
        if filename not in self.files:
            response = httpx2.Response(404, request=httpx2.Request("HEAD", url))
            raise RemoteEntryNotFoundError("404 Client Error: Entry not found", response=response)
        return HfFileMetadata(
            commit_hash=COMMIT, etag=self.sha[filename], location=url, size=self.listed[filename], xet_file_data=None
        )

    def hf_hub_download(self, repo_id: str, filename: str, *, cache_dir: Path, tqdm_class=None, **kwargs) -> str:
        target = Path(cache_dir) / "models--ZinengTang--CoDi" / "snapshots" / COMMIT / filename
        self.fetched_at.append(kwargs.get("revision"))
        if not target.exists():
            self.downloaded.append(filename)
            size = self.files[filename]
            bar = (tqdm_class or hf_tqdm)(total=size, desc=filename, unit="B", disable=True, name="test")
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as f:
                for start in range(0, size, 256):
                    f.write(bytes(min(256, size - start)))
                    bar.update(min(256, size - start))
            bar.close()
        return str(target)


@pytest.fixture
def reachable(monkeypatch: pytest.MonkeyPatch, online_mode: None) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda *args, **kwargs: True)


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeHub) -> None:
    monkeypatch.setattr(hub, "get_hf_file_metadata", fake.get_hf_file_metadata)
    monkeypatch.setattr(hub, "hf_hub_download", fake.hf_hub_download)


@pytest.mark.usefixtures("reachable")
def test_download_reports_progress_and_takes_a_missing_fp16_file_from_the_root(tmp_path: Path, monkeypatch) -> None:
    fake = FakeHub(fp16_files(*OFFICIAL_FILES[:3]) | {OFFICIAL_FILES[3]: 5000})
    install(monkeypatch, fake)
    calls: list[tuple[int, int, str]] = []
    weights = download_official("fp16", cache_dir=tmp_path, progress=lambda *call: calls.append(call))
    assert [p.name for p in weights.files] == list(OFFICIAL_FILES)
    assert weights.files[3].parent.name == COMMIT  # the root copy
    total = sum(fake.files.values())
    assert {t for _, t, _ in calls} == {total}
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)  # never goes back
    assert calls[-1] == (total, total, OFFICIAL_FILES[3])
    assert (SIZES[OFFICIAL_FILES[0]], total, f"{FP16_FOLDER}/{OFFICIAL_FILES[0]}") in calls
    assert len(calls) > 2 * len(OFFICIAL_FILES)  # byte-level reports, not only one per file
    assert fake.downloaded == list(fake.files)


@pytest.mark.usefixtures("reachable")
def test_fetch_online_downloads_only_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    fake = FakeHub(fp16_files(*OFFICIAL_FILES))
    install(monkeypatch, fake)
    build_cache(tmp_path, fp16_files(*OFFICIAL_FILES[:2]))
    weights = fetch_official("fp16", cache_dir=tmp_path)
    assert [p.name for p in weights.files] == list(OFFICIAL_FILES)
    assert fake.downloaded == [f"{FP16_FOLDER}/{name}" for name in OFFICIAL_FILES[2:]]


@pytest.mark.usefixtures("reachable")
def test_a_size_mismatch_is_caught(tmp_path: Path, monkeypatch) -> None:
    text = f"{FP16_FOLDER}/CoDi_text_diffuser.pth"
    install(monkeypatch, FakeHub(fp16_files(*OFFICIAL_FILES), listed_sizes={text: SIZES[OFFICIAL_FILES[1]] + 1}))
    with pytest.raises(WeightsNotFoundError, match=r"incomplete or corrupt(.|\n)*--force-download") as info:
        download_official("fp16", cache_dir=tmp_path)
    assert f"{text} is 1,100 bytes in the cache" in str(info.value) and "the Hub lists 1,101 bytes" in str(info.value)


@pytest.mark.usefixtures("reachable")
def test_the_four_files_come_from_the_commit_main_pointed_to_first(tmp_path: Path, monkeypatch) -> None:
    """Issue 20, item 6: 'main' is resolved once; every later question and every download names that commit, so a
    repository updated during an 11.6 GB download cannot mix two versions."""
    fake = FakeHub(fp16_files(*OFFICIAL_FILES))
    install(monkeypatch, fake)
    weights = download_official("fp16", cache_dir=tmp_path)
    assert weights.commit == COMMIT
    assert fake.asked == ["main"] + [COMMIT] * 3
    assert fake.fetched_at == [COMMIT] * 4
    assert (tmp_path / "models--ZinengTang--CoDi" / "refs" / "main").read_text() == COMMIT  # found offline later
    monkeypatch.setenv("CODI_OFFICIAL_REVISION", COMMIT)  # a pin chosen by whoever hosts it
    fake.asked.clear()
    download_official("fp16", cache_dir=tmp_path)
    assert fake.asked == [COMMIT] * 4


@pytest.mark.usefixtures("reachable")
def test_a_content_hash_mismatch_is_caught_even_for_a_cached_file(tmp_path: Path, monkeypatch) -> None:
    audio = f"{FP16_FOLDER}/CoDi_audio_diffuser_m.pth"
    build_cache(tmp_path, fp16_files(*OFFICIAL_FILES))  # right sizes, but the Hub lists another content
    install(monkeypatch, FakeHub(fp16_files(*OFFICIAL_FILES), listed_sha={audio: "ab" * 32}))
    with pytest.raises(WeightsNotFoundError, match=r"(?s)has sha256 [0-9a-f]{64} but the Hub lists (ab){32}.*force"):
        download_official("fp16", cache_dir=tmp_path)
    assert hub.sha256_of(tmp_path / "models--ZinengTang--CoDi" / "snapshots" / COMMIT / audio) == (
        hashlib.sha256(bytes(SIZES[OFFICIAL_FILES[2]])).hexdigest()
    )


@pytest.mark.usefixtures("reachable")
def test_a_file_not_in_the_repository_is_not_called_a_network_problem(tmp_path: Path, monkeypatch) -> None:
    install(monkeypatch, FakeHub(fp16_files(*OFFICIAL_FILES[:3])))
    with pytest.raises(WeightsNotFoundError, match="this is not a network problem") as info:
        download_official("fp16", cache_dir=tmp_path)
    assert "has no checkpoints_fp16/CoDi_video_diffuser_8frames.pth nor CoDi_video_diffuser_8frames.pth" in str(
        info.value
    )


@pytest.mark.usefixtures("reachable")
def test_network_errors_after_the_probe_say_what_failed(tmp_path: Path, monkeypatch) -> None:
    install(monkeypatch, FakeHub(fp16_files(*OFFICIAL_FILES)))

    def connection_lost(*args: object, **kwargs: object) -> None:
        raise httpx2.ConnectError("connection reset")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hub, "get_hf_file_metadata", connection_lost)
    with pytest.raises(
        WeightsNotFoundError, match="about checkpoints_fp16/CoDi_encoders.pth: ConnectError: connection"
    ):
        download_official("fp16", cache_dir=tmp_path)
    install(monkeypatch, FakeHub(fp16_files(*OFFICIAL_FILES)))
    monkeypatch.setattr(hub, "hf_hub_download", disk_full)
    with pytest.raises(WeightsNotFoundError, match="(?s)Downloading checkpoints_fp16/CoDi_encoders.pth .*disk full"):
        download_official("fp16", cache_dir=tmp_path)
