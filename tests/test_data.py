"""Data stages against real files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import cli_command, run_cli, synth_speech
from speechcodec.data import (
    DataError,
    clean_corpus,
    download,
    extract_vctk,
    held_out_speakers,
    scan_folder,
    scan_vctk,
    split_speakers,
)
from speechcodec.data.clean import CleanConfig


def flac_bytes(seconds: float, seed: int, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synth_speech(seconds, rate, seed), rate, format="FLAC")
    return buf.getvalue()


def vctk_zip(extra: dict[str, bytes] | None = None, speakers: int = 3) -> bytes:
    """A small zip in the VCTK 0.92 layout, with mic2 files and extras training does not need."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for s in range(speakers):
            spk = f"p{225 + s}"
            for u in range(1, 3):
                utt = f"{spk}_{u:03d}"
                z.writestr(f"wav48_silence_trimmed/{spk}/{utt}_mic1.flac", flac_bytes(1.0, s * 10 + u))
                z.writestr(f"wav48_silence_trimmed/{spk}/{utt}_mic2.flac", b"not needed")
                z.writestr(f"txt/{spk}/{utt}.txt", f"Sentence {u} of {spk}.\n")
        z.writestr("speaker-info.txt", "ID AGE\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


class Server:
    """A threaded http.server on 127.0.0.1 serving byte blobs with Range support.

    ``cut_first`` paths close the connection half-way through the first response; ``stall_first``
    paths send half of it, then hang until ``release`` is set (or the server closes).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_first: set[str] = set()
        self.stall_first: set[str] = set()
        self.release = threading.Event()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.stall_first:
                    server.stall_first.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.release.wait(60)
                    self.connection.shutdown(2)
                    return
                if self.path in server.cut_first:
                    server.cut_first.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def test_full_download_is_verified(server, tmp_path):
    data = vctk_zip()
    server.files["/vctk.zip"] = data
    dest = download(f"{server.url}/vctk.zip", tmp_path / "vctk.zip",
                    sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "vctk.zip.part").exists()
    # A second call finds the verified file and fetches nothing.
    before = len(server.requests)
    download(f"{server.url}/vctk.zip", dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert len(server.requests) == before


def test_cut_transfer_resumes_with_a_range_request(server, tmp_path):
    data = vctk_zip(speakers=6)
    digest = hashlib.sha256(data).hexdigest()
    server.files["/vctk.zip"] = data
    server.cut_first.add("/vctk.zip")
    dest = tmp_path / "vctk.zip"
    with pytest.raises(DataError, match="rerun to resume"):
        download(f"{server.url}/vctk.zip", dest, sha256=digest, retries=0, progress=False)
    part = tmp_path / "vctk.zip.part"
    assert 0 < part.stat().st_size < len(data) and not dest.exists()
    download(f"{server.url}/vctk.zip", dest, sha256=digest, retries=0, progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1] == ("/vctk.zip", f"bytes={len(data) // 2}-")


def test_ctrl_c_keeps_the_part_and_the_same_command_resumes(server, tmp_path):
    """A user presses Ctrl-C during `speechcodec data download`, then runs the same command again."""
    data = vctk_zip(speakers=6)
    server.files["/vctk.zip"] = data
    server.stall_first.add("/vctk.zip")
    dest, part = tmp_path / "vctk.zip", tmp_path / "vctk.zip.part"
    args = ["data", "download", "--url", f"{server.url}/vctk.zip", "--out", dest,
            "--sha256", hashlib.sha256(data).hexdigest(), "-q"]
    proc = subprocess.Popen([*cli_command(), *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (part.exists() and part.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == \
        "speechcodec: interrupted; rerun the same command to resume the download"
    assert 0 < part.stat().st_size <= len(data) // 2 and not dest.exists()
    server.release.set()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1][1].startswith("bytes=")  # went on from what it had


def test_cut_transfer_resumes_within_one_call(server, tmp_path):
    data = vctk_zip()
    server.files["/v.zip"] = data
    server.cut_first.add("/v.zip")
    download(f"{server.url}/v.zip", tmp_path / "v.zip", sha256=hashlib.sha256(data).hexdigest(),
             progress=False)
    assert (tmp_path / "v.zip").read_bytes() == data
    assert [r for _, r in server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_checksum_mismatch_removes_the_download_only(server, tmp_path):
    server.files["/v.zip"] = vctk_zip()
    keep = tmp_path / "mine.txt"
    keep.write_text("a user's file")
    with pytest.raises(DataError, match="corrupt"):
        download(f"{server.url}/v.zip", tmp_path / "v.zip", sha256="0" * 64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_existing_file_with_bad_checksum_is_left_alone(tmp_path):
    dest = tmp_path / "v.zip"
    dest.write_bytes(b"the user's own bytes")
    with pytest.raises(DataError, match="left untouched"):
        download("http://127.0.0.1:9/never", dest, sha256="0" * 64, progress=False)
    assert dest.read_bytes() == b"the user's own bytes"


def test_network_failure_is_one_clear_error(tmp_path, server):
    with pytest.raises(DataError, match="failed .*; nothing was written"):
        download(f"{server.url}/missing.zip", tmp_path / "x.zip", retries=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_answers_is_given_up_on_and_said(tmp_path, capsys):
    """It accepts the connection and says nothing: each try is reported, and the fetch ends soon,
    leaving no empty corpus folder behind."""
    import socket

    from speechcodec.data.prepare import fetch_corpus

    silent = socket.create_server(("127.0.0.1", 0))  # listens; the kernel accepts; nobody answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/VCTK.zip"
    config = {"dataset": "vctk", "data": {"vctk": {"url": url, "sha256": None, "size_bytes": None,
                                                   "download_dir": str(tmp_path / "dl"), "local_path": None,
                                                   "timeout_s": 0.5, "retries": 1}}}
    started = time.monotonic()
    try:
        with pytest.raises(DataError, match=r"\(no answer from the server in 0.5 s\); nothing was written"):
            fetch_corpus(config, tmp_path / "corpus", progress=False)
    finally:
        silent.close()
    assert time.monotonic() - started < 10
    said = capsys.readouterr().err
    assert f"download of {url}: attempt 1 of 2 failed (no answer from the server in 0.5 s)" in said
    assert not (tmp_path / "corpus").exists()


def test_corrupt_archive_is_refused_and_removed(server, tmp_path):
    data = vctk_zip()
    server.files["/v.zip"] = data[: len(data) // 2]  # no checksum configured: extraction notices
    zip_path = download(f"{server.url}/v.zip", tmp_path / "v.zip", progress=False)
    with pytest.raises(DataError, match="not a readable zip"):
        extract_vctk(zip_path, tmp_path / "vctk", remove_if_corrupt=True, progress=False)
    assert not zip_path.exists() and not (tmp_path / "vctk").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "/etc/evil.txt", "txt/../../evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, evil):
    zip_path = tmp_path / "v.zip"
    zip_path.write_bytes(vctk_zip({evil: b"pwned"}))
    out = tmp_path / "sub" / "vctk"
    with pytest.raises(DataError, match="unsafe"):
        extract_vctk(zip_path, out, progress=False)
    assert not out.exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "sub" / "evil.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    buf = io.BytesIO(vctk_zip())
    with zipfile.ZipFile(buf, "a") as z:
        info = zipfile.ZipInfo("txt/p225/link.txt")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    (tmp_path / "v.zip").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="symbolic link"):
        extract_vctk(tmp_path / "v.zip", tmp_path / "vctk", progress=False)


def test_extraction_keeps_only_what_training_needs(tmp_path):
    (tmp_path / "v.zip").write_bytes(vctk_zip())
    root = extract_vctk(tmp_path / "v.zip", tmp_path / "vctk", progress=False)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert not [f for f in files if "mic2" in f]
    assert "wav48_silence_trimmed/p225/p225_001_mic1.flac" in files and "txt/p227/p227_002.txt" in files
    items = scan_vctk(root)
    assert len(items) == 6 and (items["audio_path"] != "").all()


def test_vctk_080_layout_and_nested_roots(tmp_path):
    base = tmp_path / "VCTK-Corpus"
    for spk in ("p225", "p226"):
        (base / "wav48" / spk).mkdir(parents=True)
        (base / "txt" / spk).mkdir(parents=True)
        sf.write(base / "wav48" / spk / f"{spk}_001.wav", synth_speech(1.0, 48000), 48000)
        (base / "txt" / spk / f"{spk}_001.txt").write_text("Hello.")
    items = scan_vctk(tmp_path)  # the corpus sits one level down, as torchaudio leaves it
    assert items["utterance"].tolist() == ["p225_001", "p226_001"]
    with pytest.raises(DataError, match="no VCTK corpus"):
        scan_vctk(tmp_path / "VCTK-Corpus" / "txt")


def test_cleaning_drops_exactly_the_planted_items(tmp_path):
    root = tmp_path / "corpus"
    audio_dir, txt_dir = root / "wav48_silence_trimmed", root / "txt"
    planted = {}
    for s in range(3):
        spk = f"p{300 + s}"
        (audio_dir / spk).mkdir(parents=True)
        (txt_dir / spk).mkdir(parents=True)
        for u in range(1, 4):
            sf.write(audio_dir / spk / f"{spk}_{u:03d}_mic1.flac", synth_speech(1.0, 48000, s * 7 + u), 48000)
            (txt_dir / spk / f"{spk}_{u:03d}.txt").write_text(f"Words {u}.")
    (txt_dir / "p300" / "p300_002.txt").unlink()
    planted[("p300", "p300_002")] = "no_transcript"
    (audio_dir / "p301" / "p301_001_mic1.flac").write_bytes(b"")
    planted[("p301", "p301_001")] = "unreadable_audio"
    (audio_dir / "p301" / "p301_002_mic1.flac").write_bytes(b"garbage" * 100)
    planted[("p301", "p301_002")] = "unreadable_audio"
    (txt_dir / "p301" / "p301_009.txt").write_text("No audio.")
    planted[("p301", "p301_009")] = "missing_audio"
    sf.write(audio_dir / "p302" / "p302_001_mic1.flac", np.zeros(48000), 48000)
    planted[("p302", "p302_001")] = "silence"
    sf.write(audio_dir / "p302" / "p302_002_mic1.flac", synth_speech(0.2, 48000), 48000)
    planted[("p302", "p302_002")] = "too_short"
    shutil.copy(audio_dir / "p300" / "p300_001_mic1.flac", audio_dir / "p302" / "p302_003_mic1.flac")
    planted[("p302", "p302_003")] = "duplicate"

    kept, dropped = clean_corpus(scan_vctk(root), tmp_path / "clean", CleanConfig(), workers=2,
                                 progress=False)
    got = {(r.speaker, r.utterance): r.reason for r in dropped.itertuples()}
    assert got == planted
    assert sorted(kept["utterance"]) == ["p300_001", "p300_003", "p301_003"]
    report = pd.read_csv(tmp_path / "clean" / "report.csv")
    assert len(report) == len(planted)
    for path in kept["path"]:
        info = sf.info(str(tmp_path / "clean" / path))
        assert (info.samplerate, info.channels) == (16000, 1)
    assert not (tmp_path / "clean" / "audio" / "p302" / "p302_003.flac").exists()


def test_folder_dataset(tmp_path):
    for seed, spk in enumerate(("alice", "bob")):
        (tmp_path / "mine" / spk / "ch1").mkdir(parents=True)
        sf.write(tmp_path / "mine" / spk / "ch1" / "a.wav", synth_speech(1.0, 22050, seed), 22050)
    items = scan_folder(tmp_path / "mine")
    assert items["speaker"].tolist() == ["alice", "bob"]
    kept, _ = clean_corpus(items, tmp_path / "clean", CleanConfig(require_transcript=False),
                           progress=False)
    assert len(kept) == 2


def test_symlinked_speaker_folders_are_found(tmp_path):
    """A corpus made of links to speaker folders kept elsewhere, with a link back up (no loop)."""
    for seed, spk in enumerate(("alice", "bob")):
        (tmp_path / "store" / spk).mkdir(parents=True)
        sf.write(tmp_path / "store" / spk / "a.wav", synth_speech(1.0, 16000, seed), 16000)
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / spk).symlink_to(tmp_path / "store" / spk, target_is_directory=True)
    (tmp_path / "store" / "alice" / "up").symlink_to(tmp_path / "corpus", target_is_directory=True)
    items = scan_folder(tmp_path / "corpus")
    assert items["speaker"].tolist() == ["alice", "bob"]
    from speechcodec.training.launch import audio_files as _audio_files

    assert [p.parent.name for p in _audio_files([str(tmp_path / "corpus")])] == ["alice", "bob"]


def _manifest(tmp_path: Path, speakers: int) -> Path:
    rows = [(f"s{i:03d}", f"s{i:03d}_{u}", "", 1.0, f"audio/s{i:03d}/{u}.flac", "")
            for i in range(speakers) for u in range(3)]
    df = pd.DataFrame(rows, columns=["speaker", "utterance", "transcript", "duration_s", "path", "source"])
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def test_split_is_speaker_disjoint_14_to_80_and_seeded(tmp_path):
    manifest = _manifest(tmp_path, 94)
    a = split_speakers(manifest, tmp_path / "a", seed=3)
    b = split_speakers(manifest, tmp_path / "b", seed=3)
    c = split_speakers(manifest, tmp_path / "c", seed=4)
    assert len(a["test"]["speakers"]) == 14
    assert len(set(a["train"]["speakers"]) | set(a["val"]["speakers"])) == 80
    assert not set(a["test"]["speakers"]) & (set(a["train"]["speakers"]) | set(a["val"]["speakers"]))
    assert a == b and a["test"] != c["test"]
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    df = pd.read_csv(tmp_path / "a" / "test.csv")
    assert (tmp_path / "a" / df["path"][0]).resolve() == (tmp_path / df["path"][0].split("../", 1)[1]).resolve()


def test_a_foreign_or_broken_manifest_is_a_one_line_error(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(bytes(range(128, 256)) * 3)
    (tmp_path / "header.csv").write_text("speaker,utterance,path\n")
    for name, match in (("other", "lacks the column(s) speaker, utterance, path"),
                        ("header", "lists no utterances"),
                        ("empty", "not a readable CSV"), ("binary", "not a readable CSV")):
        result = run_cli("eval", "--model", "sc-3k", "--test-manifest", tmp_path / f"{name}.csv",
                         "--out", tmp_path / "ev")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and match in lines[0], result.stderr
    assert not (tmp_path / "ev").exists()


def test_split_with_named_test_speakers(tmp_path):
    manifest = _manifest(tmp_path, 5)
    s = split_speakers(manifest, tmp_path / "s", test_speakers=["s001", "s004"])
    assert s["test"]["speakers"] == ["s001", "s004"]
    with pytest.raises(DataError, match="not in the corpus"):
        split_speakers(manifest, tmp_path / "t", test_speakers=["nobody"])


def test_held_out_speakers_are_a_fixed_tenth():
    names = [f"{i:04d}" for i in range(230)]
    held = held_out_speakers(reversed(names))  # order and repeats do not matter
    assert held == held_out_speakers(names + names[:5])
    assert len(held) == 23 and held[:2] == ["0005", "0015"] and held[-1] == "0225"
    assert held_out_speakers(names, every=4)[:2] == ["0002", "0006"]
    with pytest.raises(ValueError, match="at least 2"):
        held_out_speakers(names, every=1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (make setup installs it)")
def test_demo_corpus_runs_the_real_stages(tmp_path):
    from speechcodec.data.demo import build_demo_corpus

    z1 = build_demo_corpus(tmp_path / "a" / "VCTK-Corpus-0.92.zip")
    z2 = build_demo_corpus(tmp_path / "b" / "VCTK-Corpus-0.92.zip")
    assert z1.read_bytes() == z2.read_bytes()  # deterministic
    kept, dropped = clean_corpus(scan_vctk(extract_vctk(z1, tmp_path / "x", progress=False)),
                                 tmp_path / "clean", progress=False)
    counts = dropped["reason"].value_counts().to_dict()
    assert counts == {"no_transcript": 8, "unreadable_audio": 2, "missing_audio": 1, "silence": 1,
                      "too_short": 1, "duplicate": 1}
    assert kept["speaker"].nunique() == 11


def test_full_disk_gives_a_clear_error_and_no_manifest(tmp_path, small_disk):
    full = small_disk
    if True:
        corpus = tmp_path / "corpus" / "spk"
        corpus.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(12):  # noisy, so FLAC cannot shrink it below the 300 kB of the disk
            audio = synth_speech(2.0, 16000, i) + 0.3 * rng.standard_normal(32000).astype(np.float32)
            sf.write(corpus / f"u{i}.wav", audio, 16000)
        result = run_cli("data", "clean", "--source", "folder", "--input", tmp_path / "corpus",
                         "--out", full / "clean", "--workers", "1", "-q")
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("speechcodec: error:") and "Traceback" not in result.stderr
        assert "space" in result.stderr or "full" in result.stderr
        assert not (full / "clean" / "manifest.csv").exists()


def _vctk_config(tmp_path, **vctk) -> dict:
    base = {"url": "", "sha256": None, "size_bytes": None, "download_dir": str(tmp_path / "downloads"),
            "local_path": None}
    return {"dataset": "vctk", "data": {"vctk": {**base, **vctk}, "folder": {"path": None},
            "clean": {"sample_rate_hz": 16000, "min_duration_s": 0.5, "silence_dbfs": -60.0,
                      "require_transcript": True}}}


def test_fetch_downloads_verifies_and_extracts(server, tmp_path):
    from speechcodec.data.prepare import corpus_items, fetch_corpus

    data = vctk_zip()
    server.files["/VCTK-Corpus-0.92.zip"] = data
    config = _vctk_config(tmp_path, url=f"{server.url}/VCTK-Corpus-0.92.zip",
                          sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    out = fetch_corpus(config, tmp_path / "corpus", progress=False)
    items, kind = corpus_items(out)
    assert kind == "vctk" and len(items) == 6
    assert (tmp_path / "downloads" / "VCTK-Corpus-0.92.zip").read_bytes() == data


def test_fetch_uses_an_existing_zip_or_folder_in_place(tmp_path):
    from speechcodec.data.prepare import corpus_items, fetch_corpus

    mine = tmp_path / "mine.zip"
    mine.write_bytes(vctk_zip())
    out = fetch_corpus(_vctk_config(tmp_path, url="http://127.0.0.1:9/none", local_path=str(mine)),
                       tmp_path / "a", progress=False)
    assert len(corpus_items(out)[0]) == 6 and mine.exists()
    assert not (tmp_path / "downloads").exists()  # nothing downloaded
    folder = extract_vctk(mine, tmp_path / "extracted", progress=False)
    out = fetch_corpus(_vctk_config(tmp_path, local_path=str(folder)), tmp_path / "b", progress=False)
    items, kind = corpus_items(out)
    assert kind == "vctk" and len(items) == 6
    assert not (tmp_path / "b" / "vctk").exists()  # pointed at, not copied
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="left it in place"):
        fetch_corpus(_vctk_config(tmp_path, local_path=str(bad)), tmp_path / "c", progress=False)
    assert bad.exists()  # a user's file is never deleted
