"""The listening page, opened in a real headless Chromium from a static server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from conftest import synth_speech
from speechcodec.evaluate import evaluate, evaluate_opus_matched, evaluate_transform_matched
from speechcodec.listen import build_listening_page, pick_utterances
from speechcodec.report import build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_utterances_are_spread_across_speakers():
    test = pd.DataFrame({"speaker": ["b", "a", "a", "b", "c", "a"],
                         "utterance": ["b1", "a2", "a1", "b2", "c1", "a3"]})
    assert [r["utterance"] for r in pick_utterances(test, 4)] == ["a1", "b1", "c1", "a2"]
    assert len(pick_utterances(test, 99)) == 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    """A miniature pipeline run: split, evals (neural, matched Opus and textbook coder, Opus grid,
    Codec 2), report."""
    root = tmp_path_factory.mktemp("run")
    (root / "split").mkdir()
    rows = []
    for i, spk in enumerate(["s1", "s1", "s2", "s3"]):
        path = root / "audio" / f"u{i}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, synth_speech(1.5, seed=40 + i), 16000)
        rows.append((spk, f"u{i}", "", 1.5, f"../audio/u{i}.flac", ""))
    pd.DataFrame(rows, columns=["speaker", "utterance", "transcript", "duration_s", "path", "source"]
                 ).to_csv(root / "split" / "test.csv", index=False)
    manifest = root / "split" / "test.csv"
    neural = evaluate(str(tiny_model), manifest, root / "eval" / "neural-4000bps", workers=2,
                      keep_audio=True, progress=False, target_bitrate_bps=4000)
    evaluate_opus_matched(neural, manifest, root / "eval" / "opus-match-4000bps", workers=2, keep_audio=True,
                          progress=False)
    evaluate_transform_matched(neural, manifest, root / "eval" / "transform-match-4000bps", workers=2,
                               keep_audio=True, progress=False)
    evaluate("opus:12000", manifest, root / "eval" / "opus-12000bps", workers=2, progress=False)
    evaluate("codec2:3200", manifest, root / "eval" / "codec2-3200bps", workers=2, keep_audio=True,
             progress=False, target_bitrate_bps=3200)
    build_report([root / "eval" / d for d in ("neural-4000bps", "opus-match-4000bps", "opus-12000bps",
                                              "codec2-3200bps", "transform-match-4000bps")], root / "report")
    config = {"name": "mini", "bitrates_bps": [4000], "listen": {"count": 3}}
    build_listening_page(config, root, root / "listen")
    return root


def test_page_is_static_and_self_contained(run_dir):
    html = (run_dir / "listen" / "index.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # 3 utterances x (original, neural, Opus, the textbook coder, Codec 2: the model is below
    # Opus's floor)
    assert html.count("<audio") == 3 * 5 and html.count("Codec 2 3200 (8 kHz) - 3.2") == 3
    assert html.count("Textbook transform coder (no network), matched to tiny-test - ") == 3  # captions
    assert html.count("<figcaption") == html.count("<audio")
    # A second metric beside PESQ: in the table and under every coded clip (not the originals).
    assert '<th scope="col">ViSQOL</th>' in html and '<th scope="col">Opus ViSQOL</th>' in html
    assert '<th scope="col">textbook ViSQOL</th>' in html
    assert html.count(", ViSQOL ") == 3 * 4
    for ref in ("assets/rate_quality.png",):
        assert (run_dir / "listen" / ref).exists()
    speakers = {line.split("(speaker ")[1].split(")")[0] for line in html.splitlines() if "(speaker " in line}
    assert speakers == {"s1", "s2", "s3"}


@pytest.fixture()
def served(run_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(run_dir / "listen"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def test_page_in_a_real_browser(served, run_dir):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make setup installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page()
        requests, failed = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(served, wait_until="load")
        # Every audio element loads its source and knows its duration.
        page.wait_for_function(
            "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
            timeout=30000)
        audio = page.evaluate("""() => [...document.querySelectorAll('audio')].map(a => ({
            src: a.currentSrc, duration: a.duration, error: a.error && a.error.code,
            label: document.getElementById(a.getAttribute('aria-labelledby'))?.textContent || ''}))""")
        assert len(audio) == 15
        for a in audio:
            assert a["error"] is None and a["duration"] > 1.0, a
            assert a["label"].strip(), a  # labelled in text
        images = page.evaluate("""() => [...document.querySelectorAll('img')].map(i => ({
            src: i.src, ok: i.complete && i.naturalWidth > 0, alt: i.alt}))""")
        assert len(images) == 1 + 15 and all(i["ok"] and i["alt"] for i in images), images
        # The numbers shown are the report's.
        cells = page.evaluate("""() => [...document.querySelectorAll('#table1 tbody tr')].map(
            r => [...r.querySelectorAll('td')].map(td => td.textContent))""")
        table = pd.read_csv(run_dir / "report" / "table1.csv")
        assert len(cells) == len(table)
        for shown, row in zip(cells, table.itertuples(), strict=True):
            assert shown[0] == row.model
            assert shown[1] == f"{row.neural_kbps:.2f}" and shown[2] == f"{row.neural_pesq_wb:.2f}"
            assert shown[3] == f"{row.neural_visqol:.2f}"
            assert shown[4] == f"{row.opus_kbps:.2f}" and shown[5] == f"{row.opus_pesq_wb:.2f}"
            assert shown[6] == f"{row.opus_visqol:.2f}"
        # Keyboard: Tab reaches the players.
        reached = set()
        for _ in range(40):
            page.keyboard.press("Tab")
            reached.add(page.evaluate("() => document.activeElement && document.activeElement.tagName"))
        assert "AUDIO" in reached
        browser.close()
    assert not failed, failed
    assert all(url.startswith("http://127.0.0.1:") for url in requests), requests
