"""Downloading the released CoDi checkpoints from the Hugging Face Hub (huggingface_hub, cached).

`fetch_official` finds the four files in the Hugging Face cache without touching the network; only when some
are missing does it go online, after a quick check that the Hub can be reached at all, so that an offline
machine gets one clear message (what is missing, where the cache is, the command and size of the download)
within seconds instead of a minute of retries. `download_official` is the explicit, verified download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import tqdm as hf_tqdm

log = logging.getLogger(__name__)

OFFICIAL_REPO = "ZinengTang/CoDi"

# Load order of the README/demo; later files override earlier ones, as in the official loader.
OFFICIAL_FILES = (
    "CoDi_encoders.pth",
    "CoDi_text_diffuser.pth",
    "CoDi_audio_diffuser_m.pth",
    "CoDi_video_diffuser_8frames.pth",
)
FP16_FOLDER = "checkpoints_fp16"
# codi.rehearsal writes this into the repository folder of a cache it made (random weights in the released
# layout): its files differ from the released ones by a few bytes of pickle, which is no sign of a broken download
REHEARSAL_MARKER = ".codi-rehearsal.json"
PRECISIONS = ("fp16", "fp32")
PROBE_TIMEOUT_S = 3.0  # how long the Hub gets to accept a TCP connection before we call it unreachable

# (bytes, exact) of each released file of ZinengTang/CoDi (main). Exact sizes are the Hub's file listing.
# Estimates: the fp16 video file's size was not recorded (~3.55 GB expected, so ~11.6 GB in all); the fp32
# encoders and audio files were only seen rounded on the Hub's page (6.03 GB, 6.91 GB). Used for messages and
# `looks_complete`; downloads are checked against the sizes the Hub reports at the time.
RELEASED_SIZES: dict[str, dict[str, tuple[int, bool]]] = {
    "fp16": {
        "CoDi_encoders.pth": (3_017_419_057, True),
        "CoDi_text_diffuser.pth": (4_097_188_355, True),
        "CoDi_audio_diffuser_m.pth": (907_848_517, True),
        "CoDi_video_diffuser_8frames.pth": (3_550_000_000, False),
    },
    "fp32": {
        "CoDi_encoders.pth": (6_030_000_000, False),
        "CoDi_text_diffuser.pth": (12_396_125_125, True),
        "CoDi_audio_diffuser_m.pth": (6_910_000_000, False),
        "CoDi_video_diffuser_8frames.pth": (11_190_012_683, True),
    },
}

ProgressFn = Callable[[int, int, str], None]  # (bytes done, bytes in all, repository path of the current file)


class WeightsNotFoundError(FileNotFoundError):
    """The official weights are neither cached nor downloadable; the message gives the command to fetch them."""


@dataclass(frozen=True)
class OfficialWeights:
    """Where the official checkpoint files are on disk, in load order."""

    files: tuple[Path, ...]
    variant: str
    commit: str | None = None  # the repository commit the four files were downloaded at (None: taken from the cache)


def pinned_revision(revision: str | None = None) -> str | None:
    """`revision`, else $CODI_OFFICIAL_REVISION (a commit to pin the released files to), else None ('main')."""
    return revision or os.environ.get("CODI_OFFICIAL_REVISION") or None


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")


def repo_path(name: str, precision: str = "fp16") -> str:
    """The path of released file `name` in the repository: under checkpoints_fp16/ for fp16, at the root for fp32."""
    return f"{FP16_FOLDER}/{name}" if precision == "fp16" else name


def _released_size(filename: str) -> int:
    """The known or estimated bytes of a repository path (checkpoints_fp16/X or X)."""
    precision = "fp16" if filename.startswith(f"{FP16_FOLDER}/") else "fp32"
    return RELEASED_SIZES[precision][Path(filename).name][0]


def official_download_size(precision: str = "fp16") -> int:
    """Bytes of the four released files of `precision` (~11.6 GB fp16, ~36.5 GB fp32; partly estimated)."""
    _check_precision(precision)
    return sum(size for size, _ in RELEASED_SIZES[precision].values())


def format_size(num_bytes: int) -> str:
    """A byte count in decimal units, as the Hub shows them: 11_572_455_929 -> '11.6 GB'."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


def looks_complete(num_bytes: int, name: str, precision: str = "fp16") -> bool:
    """Whether a file of `num_bytes` can be released file `name`: its exact size where known, else non-empty."""
    size, exact = RELEASED_SIZES[precision][name]
    return num_bytes == size if exact else num_bytes > 0


def codi_download_command(precision: str = "fp16") -> str:
    """Our own download command (the `download` subcommand of `python -m codi`)."""
    return "python -m codi download" + (" --precision fp32" if precision == "fp32" else "")


def _cli_flags(cache_dir: str | Path | None, revision: str | None) -> str:
    return (f" --revision {revision}" if revision else "") + (f" --cache-dir {cache_dir}" if cache_dir else "")


def download_command(
    variant: str = "fp16",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    files: tuple[str, ...] = OFFICIAL_FILES,
) -> str:
    """The Hugging Face CLI command that downloads `files` of `variant` into the cache."""
    names = " ".join(repo_path(f, variant) for f in files)
    return f"hf download {OFFICIAL_REPO} {names}{_cli_flags(cache_dir, revision)}"


def hub_endpoint() -> str:
    """The Hub URL huggingface_hub talks to: HF_ENDPOINT as set now, else huggingface_hub's (https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline_mode() -> bool:
    """Whether huggingface_hub's offline mode is on (HF_HUB_OFFLINE, read when called, or as imported)."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any((v or "").upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def _probe_address(endpoint: str) -> tuple[str, int] | None:
    """The (host, port) a connection to `endpoint` opens first: the proxy's when one applies, else the Hub's."""
    url = urlsplit(endpoint)
    if not url.hostname:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            return via.hostname, via.port or (443 if via.scheme == "https" else 80)
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub (or the proxy that leads to it) opens within `timeout` seconds.

    The connection (name lookup included) runs in a daemon thread, so a hanging DNS resolver cannot hold
    the caller past `timeout`.
    """
    address = _probe_address(endpoint or hub_endpoint())
    if address is None:
        return False
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, name="codi-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _offline_reason(local_files_only: bool | None, endpoint: str) -> str | None:
    """Why the Hub is not to be asked (local_files_only, offline mode, no answer), or None when online."""
    if local_files_only:
        return "only the local cache may be used (local_files_only=True)"
    if hub_offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE is set), so nothing can be downloaded"
    if not hub_reachable(endpoint):
        return (
            f"the Hugging Face Hub cannot be reached: could not connect to {endpoint} "
            f"(waited up to {PROBE_TIMEOUT_S:g} s; offline?)"
        )
    return None


def cached_official_files(
    precision: str = "fp16", cache_dir: str | Path | None = None, revision: str | None = None
) -> dict[str, Path]:
    """The released files already in the Hugging Face cache, read from disk only (no network).

    Args:
        precision: 'fp16' or 'fp32'. For fp16 a cached root (fp32) copy stands in for a file missing from
            checkpoints_fp16/, as when downloading.
        cache_dir: Hugging Face cache folder (default: HF_HUB_CACHE, ~/.cache/huggingface/hub).
        revision: branch, tag or commit (default 'main').
    Returns:
        {file name: path in the cache} for the cached files only.
    """
    _check_precision(precision)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    found: dict[str, Path] = {}
    for name in OFFICIAL_FILES:
        for filename in dict.fromkeys((repo_path(name, precision), name)):
            path = try_to_load_from_cache(OFFICIAL_REPO, filename, cache_dir=cache, revision=revision)
            if isinstance(path, str):  # None: not cached; _CACHED_NO_EXIST: known to be absent from the repo
                found[name] = Path(path)
                break
    return found


def _download_hint(precision: str) -> str:
    """Our download command and its size: 'python -m codi download   (11.6 GB; ...)'."""
    size = format_size(official_download_size(precision))
    if precision == "fp16":
        size += f"; full precision: --precision fp32, {format_size(official_download_size('fp32'))}"
    return f"{codi_download_command(precision)}   ({size})"


def _not_cached_message(
    precision: str, missing: list[str], cache_dir: str | Path | None, revision: str | None, reason: str
) -> str:
    cache = Path(cache_dir).expanduser() if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    names = ", ".join(repo_path(n, precision) for n in missing)
    return (
        f"The official CoDi weights ({precision}) are not all on this machine: {names} not cached "
        f"(Hugging Face cache: {cache}), and {reason}.\n"
        f"Download them once, online, with:\n  {_download_hint(precision)}\n"
        f"or with the Hugging Face CLI:\n  {download_command(precision, cache_dir, revision)}"
    )


def _warn_if_incomplete(cached: dict[str, Path]) -> None:
    rehearsal = next((f for p in cached.values() for f in p.parents if (f / REHEARSAL_MARKER).is_file()), None)
    if rehearsal is not None:
        log.info("%s is a rehearsal (codi.rehearsal): random weights in the released files' layout", rehearsal)
        return
    for name, path in cached.items():
        found = "fp16" if path.parent.name == FP16_FOLDER else "fp32"
        num_bytes = path.stat().st_size
        if not looks_complete(num_bytes, name, found):
            log.warning(
                "%s is %d bytes, not the %d of the released file (incomplete? delete it and download it again)",
                path,
                num_bytes,
                RELEASED_SIZES[found][name][0],
            )


def fetch_official(
    variant: str = "fp16",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> OfficialWeights:
    """Returns the official checkpoint files: from the cache with no network access when all four are there,
    else downloading the missing ones (see `download_official`).

    Args:
        variant: 'fp16' (checkpoints_fp16/, a third of the download) or 'fp32' (repository root). A file missing
            from the fp16 folder is taken from the root.
        cache_dir: Hugging Face cache folder (default: HF_HUB_CACHE, ~/.cache/huggingface/hub).
        revision: repository revision (branch, tag or commit).
        local_files_only: only use the cache (offline mode, HF_HUB_OFFLINE, implies it).
    Returns:
        OfficialWeights with the four paths in load order.
    Raises:
        WeightsNotFoundError: some files are not cached and cannot be downloaded now (offline, local_files_only
            or the Hub not answering within PROBE_TIMEOUT_S); the message names them, the cache, and the commands.
    """
    _check_precision(variant)
    revision = pinned_revision(revision)
    cached = cached_official_files(variant, cache_dir, revision)
    missing = [name for name in OFFICIAL_FILES if name not in cached]
    if not missing:
        _warn_if_incomplete(cached)
        return OfficialWeights(files=tuple(cached[name] for name in OFFICIAL_FILES), variant=variant)
    endpoint = hub_endpoint()
    reason = _offline_reason(local_files_only, endpoint)
    if reason is not None:
        raise WeightsNotFoundError(_not_cached_message(variant, missing, cache_dir, revision, reason))
    return _download(variant, cache_dir, revision, None, endpoint)


def download_official(
    precision: str = "fp16",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    progress: ProgressFn | None = None,
) -> OfficialWeights:
    """Downloads the four released files into the Hugging Face cache, all at one commit of the repository, and
    checks each file's size and sha256 (cached files included) against what the Hub lists for that commit.

    Files already cached are not fetched again (huggingface_hub only compares them with the Hub). Within a
    download huggingface_hub resumes the stream after transient network errors; a file whose download fails
    is dropped (huggingface_hub 2.x keeps no partial file between runs), so running again fetches only the
    files still missing, each from its start.

    Args:
        precision: 'fp16' (checkpoints_fp16/, ~11.6 GB) or 'fp32' (repository root, ~36.5 GB). A file missing
            from the fp16 folder is taken from the root.
        cache_dir: Hugging Face cache folder (default: HF_HUB_CACHE, ~/.cache/huggingface/hub).
        revision: repository revision (branch, tag or commit; default $CODI_OFFICIAL_REVISION, else 'main',
            resolved to its commit once).
        progress: called with (bytes done, bytes in all, repository path of the file) as bytes arrive; without
            it huggingface_hub's own progress bars show (they show with it too, on a terminal).
    Returns:
        OfficialWeights with the four paths in load order. Offline with all four cached: the cached files,
        unchecked.
    Raises:
        WeightsNotFoundError: offline or Hub unreachable with files missing, a file not in the repository, a
            failed download, or a file whose size differs from the Hub's; the message says which and what to do.
    """
    _check_precision(precision)
    revision = pinned_revision(revision)
    endpoint = hub_endpoint()
    reason = _offline_reason(None, endpoint)
    if reason is not None:
        cached = cached_official_files(precision, cache_dir, revision)
        missing = [name for name in OFFICIAL_FILES if name not in cached]
        if missing:
            raise WeightsNotFoundError(_not_cached_message(precision, missing, cache_dir, revision, reason))
        return OfficialWeights(files=tuple(cached[name] for name in OFFICIAL_FILES), variant=precision)
    return _download(precision, cache_dir, revision, progress, endpoint)


@dataclass(frozen=True)
class HubFile:
    """A released file as the Hub lists it at one commit."""

    path: str  # repository path
    size: int  # bytes, -1 when the Hub gives none
    sha256: str | None  # content hash of a large (LFS) file: the Hub's ETag for it; None for small git files


def _hub_file(filename: str, revision: str | None, endpoint: str) -> tuple[HubFile, str | None] | None:
    """`filename` as the Hub lists it, and the commit `revision` resolves to (one HEAD request, no retries);
    None when the Hub answers that the repository has no such file."""
    url = hf_hub_url(OFFICIAL_REPO, filename, revision=revision, endpoint=endpoint)
    try:
        metadata = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=endpoint)
    except RemoteEntryNotFoundError:
        return None
    etag = (metadata.etag or "").strip('"').lower()
    sha256 = etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None  # a git blob's etag is a 40-digit sha1
    size = metadata.size if metadata.size is not None else -1
    return HubFile(filename, size, sha256), metadata.commit_hash


def _hub_sources(precision: str, revision: str | None, endpoint: str) -> tuple[dict[str, HubFile], str | None]:
    """{file name: HubFile} from the Hub, the fp16 folder first, then the root, and the commit they are listed at.

    The first answer resolves `revision` (default 'main') to a commit; every later question and every download
    names that commit, so the four files come from one version of the repository even if it changes meanwhile."""
    at = f"{OFFICIAL_REPO} (revision {revision or 'main'})"
    sources: dict[str, HubFile] = {}
    commit: str | None = None
    for name in OFFICIAL_FILES:
        candidates = tuple(dict.fromkeys((repo_path(name, precision), name)))
        for filename in candidates:
            try:
                found = _hub_file(filename, commit or revision, endpoint)
            except (RepositoryNotFoundError, RevisionNotFoundError) as e:
                raise WeightsNotFoundError(f"{at} is not on the Hub: {e}") from e
            except (OSError, httpx2.TransportError) as e:
                raise WeightsNotFoundError(
                    f"Could not ask the Hugging Face Hub ({endpoint}) about {filename}: {e.__class__.__name__}: {e}\n"
                    f"Check the connection and run again:\n  {_download_hint(precision)}"
                ) from e
            if found is not None:
                sources[name], commit = found[0], commit or found[1]
                break
        else:
            raise WeightsNotFoundError(
                f"{at} has no {' nor '.join(candidates)}: the repository no longer holds the released files "
                "(the Hub answered; this is not a network problem)."
            )
    return sources, commit


def _reporting_bar(report: Callable[[int], None]) -> type[hf_tqdm]:
    """A huggingface_hub progress bar class (hf_hub_download's `tqdm_class`) that also reports its byte count."""

    class ReportingBar(hf_tqdm):
        def __init__(self, *args, **kwargs) -> None:
            self.bytes_seen = 0  # tqdm stops counting when the bar is disabled (no terminal); this count goes on
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.bytes_seen += int(n or 0)
            report(self.bytes_seen)
            return super().update(n)

    return ReportingBar


def _file_reporter(progress: ProgressFn, done: int, total: int, filename: str, size: int) -> Callable[[int], None]:
    """Turns one file's byte counts into `progress` calls. xet downloads run two bars (bytes received, bytes
    written), so the larger count so far, at most the file's size, is reported."""
    current = 0

    def report(seen: int) -> None:
        nonlocal current
        current = max(current, seen if size < 0 else min(seen, size))
        progress(done + current, total, filename)

    return report


def _download(
    precision: str, cache_dir: str | Path | None, revision: str | None, progress: ProgressFn | None, endpoint: str
) -> OfficialWeights:
    """Downloads (or finds cached) each released file, reporting bytes and checking sizes; the Hub answers."""
    sources, commit = _hub_sources(precision, revision, endpoint)
    pinned = commit or revision
    total = sum(f.size if f.size >= 0 else _released_size(f.path) for f in sources.values())
    done = 0
    paths = []
    for name in OFFICIAL_FILES:
        file = sources[name]
        bar_class = None
        if progress is not None:
            bar_class = _reporting_bar(_file_reporter(progress, done, total, file.path, file.size))
        path = _download_file(file.path, precision, cache_dir, pinned, endpoint, bar_class)
        _check_file(path, file, cache_dir, pinned)
        done += path.stat().st_size
        if progress is not None:
            progress(done, total, file.path)
        paths.append(path)
    if commit and commit != revision:
        _point_ref(paths[0], revision or "main", commit)
        log.info("%s: the four files are those of commit %s", OFFICIAL_REPO, commit)
    return OfficialWeights(files=tuple(paths), variant=precision, commit=commit)


def _download_file(
    filename: str,
    precision: str,
    cache_dir: str | Path | None,
    revision: str | None,
    endpoint: str,
    bar_class: type[hf_tqdm] | None,
) -> Path:
    try:
        return Path(
            hf_hub_download(
                OFFICIAL_REPO,
                filename,
                cache_dir=cache_dir,
                revision=revision,
                endpoint=endpoint,
                tqdm_class=bar_class,
            )
        )
    except RemoteEntryNotFoundError as e:  # listed a moment ago, gone now
        raise WeightsNotFoundError(f"{OFFICIAL_REPO} has no {filename} (the Hub answered 404): {e}") from e
    except (OSError, httpx2.TransportError) as e:
        raise WeightsNotFoundError(
            f"Downloading {filename} from {OFFICIAL_REPO} failed: {e.__class__.__name__}: {e}\n"
            f"Files already downloaded stay in the cache. Run again to fetch the rest:\n  {_download_hint(precision)}"
        ) from e


def _check_file(path: Path, file: HubFile, cache_dir: str | Path | None, revision: str | None) -> None:
    """The bytes on disk (cached files included) against the size and, for a large file, the sha256 the Hub lists."""
    problem = ""
    actual = path.stat().st_size
    if file.size >= 0 and actual != file.size:
        problem = f"is {actual:,} bytes in the cache ({path}) but the Hub lists {file.size:,} bytes: the file is "
        problem += "incomplete or corrupt"
    elif file.sha256 is not None and (digest := sha256_of(path)) != file.sha256:
        problem = f"in the cache ({path}) has sha256 {digest} but the Hub lists {file.sha256}: the file is corrupt"
    if problem:
        raise WeightsNotFoundError(
            f"{file.path} {problem}. Fetch it again with:\n"
            f"  hf download {OFFICIAL_REPO} {file.path}{_cli_flags(cache_dir, revision)} --force-download"
        )


def _point_ref(downloaded: Path, ref: str, commit: str) -> None:
    """Records in the cache that `ref` (a branch or tag) is `commit`, as huggingface_hub does when it downloads
    by name: the files were fetched by commit, and later cache-only look-ups ask for the name."""
    repo = next(p.parent for p in downloaded.parents if p.name == "snapshots")
    target = repo / "refs" / ref
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text().strip() != commit:
        target.write_text(commit)


def sha256_of(path: Path, chunk: int = 16 << 20) -> str:
    """The file's sha256, read in 16 MB chunks (bounded memory for multi-GB checkpoints)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
