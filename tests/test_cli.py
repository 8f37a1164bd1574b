"""The ``speechcodec`` command as a user runs it: end to end, and every bad input on one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import TINY_MODEL_CONFIG, cli_command, run_cli, synth_speech


@pytest.fixture()
def env(tiny_model):
    return {"SPEECHCODEC_MODEL_PATH": str(tiny_model.parent)}


@pytest.fixture()
def wav(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, synth_speech(3.0, 16000, seed=9), 16000)
    return path


@pytest.fixture()
def stream(tmp_path, wav, env):
    out = tmp_path / "speech.spcd"
    result = run_cli("encode", wav, out, "--model", "tiny-test", env=env)
    assert result.returncode == 0, result.stderr
    return out


def assert_one_line_error(result, output, match):
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("speechcodec: error:") and match in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]


@pytest.mark.parametrize("given", ["6", "6.5", "0", "fast", "-6k"])
def test_a_bitrate_without_its_unit_is_a_clear_error(tmp_path, wav, env, given):
    """One unit across the CLI: bits per second, or kbps with a k; a bare 6 was meant as 6k."""
    out = tmp_path / "speech.spcd"
    result = run_cli("encode", wav, out, f"--bitrate={given}", env=env)
    said = {"6": "write --bitrate 6k", "6.5": "write --bitrate 6.5k", "0": "must be positive"}
    assert_one_line_error(result, out, said.get(given, "6000 or 6k"))


@pytest.mark.parametrize("given", ["4000", "4k", "4kbps", "4.0k"])
def test_a_bitrate_is_bps_or_kbps_with_a_k(tmp_path, wav, env, given):
    from speechcodec.cli import bitrate_bps

    assert bitrate_bps(given) == 4000
    result = run_cli("encode", wav, tmp_path / "speech.spcd", "--bitrate", given, env=env)
    assert result.returncode == 0 and "tiny-test" in result.stderr, result.stderr


def test_encode_info_decode_end_to_end(tmp_path, wav, env):
    out = tmp_path / "speech.spcd"
    result = run_cli("encode", wav, out, "--bitrate", "4k", env=env)
    assert result.returncode == 0, result.stderr
    assert "kbps" in result.stderr and "tiny-test" in result.stderr
    info = run_cli("info", out, "--json", env=env)
    facts = json.loads(info.stdout)
    assert facts["model"] == "tiny-test" and facts["num_chunks"] == 1
    assert facts["num_bytes"] == out.stat().st_size
    assert facts["bitrate_kbps"] == pytest.approx(out.stat().st_size * 8 / 3.0 / 1000, rel=1e-3)
    text = run_cli("info", out, env=env).stdout
    assert "integrity" in text and "ok" in text
    back = tmp_path / "back.wav"
    result = run_cli("decode", out, back, env=env)
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(back)
    assert rate == 16000 and len(audio) == 48000
    result = run_cli("decode", out, tmp_path / "back8k.flac", "--sample-rate", "8000", env=env)
    assert result.returncode == 0 and sf.info(str(tmp_path / "back8k.flac")).samplerate == 8000


def test_models_lists_real_models(env):
    result = run_cli("models", "--json", env=env)
    models = json.loads(result.stdout)
    assert {"name", "bitrate_bps", "sample_rate_hz"} <= set(models[0])
    assert "tiny-test" in [m["name"] for m in models]
    assert "tiny-test" in run_cli("models", env=env).stdout


def test_models_says_which_files_it_passed_over(tmp_path, tiny_model):
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    shutil.copy(tiny_model, tmp_path / "again.safetensors")  # the same name, in a later folder
    folders = os.pathsep.join([str(tiny_model.parent), str(tmp_path), str(tmp_path / "typo")])
    result = run_cli("models", "--json", env={"SPEECHCODEC_MODEL_PATH": folders})
    assert [m["name"] for m in json.loads(result.stdout)].count("tiny-test") == 1
    notes = result.stderr.strip().splitlines()
    assert any(n.startswith("note: skipped") and "broken.safetensors" in n for n in notes), notes
    assert any("again.safetensors is also named 'tiny-test'" in n for n in notes), notes
    assert f"note: $SPEECHCODEC_MODEL_PATH names {tmp_path / 'typo'}, which is not a folder" in notes, notes


def test_help_answers():
    result = run_cli("--help")
    assert result.returncode == 0 and "encode" in result.stdout and "examples" in result.stdout
    for verb in ("encode", "decode", "info", "models", "train"):
        assert run_cli(verb, "--help").returncode == 0


def _bad_audio(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not audio\n" * 10)
    elif kind == "truncated":
        sf.write(path, synth_speech(1.0), 16000)
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "zero_length":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "nan":
        audio = synth_speech(1.0)
        audio[100] = np.nan
        sf.write(path, audio, 16000, subtype="FLOAT")
    elif kind == "huge":  # a float WAV far beyond full scale: not sound
        sf.write(path, synth_speech(1.0) * 1e30, 16000, subtype="FLOAT")
    elif kind == "directory":
        path.mkdir()
    elif kind == "rate_500hz":
        sf.write(path, synth_speech(1.0, 500), 500)
    return path


@pytest.mark.parametrize("kind, match", [
    ("missing", "does not exist"), ("empty", "empty"), ("text", "cannot read"),
    ("truncated", "cannot read"), ("zero_length", "no audio samples"), ("nan", "NaN"),
    ("huge", "far beyond full scale"),
    ("directory", "directory"), ("rate_500hz", "is at 500 Hz; a stream holds 1000 to 384000 Hz"),
])
def test_bad_audio_input(tmp_path, env, kind, match):
    out = tmp_path / "out.spcd"
    result = run_cli("encode", _bad_audio(tmp_path, kind), out, "--model", "tiny-test", env=env)
    assert_one_line_error(result, out, match)


def _bad_stream(stream, kind):
    data = bytearray(stream.read_bytes())
    if kind == "truncated":
        data = data[: len(data) - 7]
    elif kind == "flipped":
        data[len(data) // 2] ^= 0x04
    elif kind == "random":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    elif kind == "future":
        data[4] = 9
    elif kind == "empty":
        data = bytearray()
    bad = stream.with_name(f"{kind}.spcd")
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("kind, match", [
    ("truncated", "truncated"), ("flipped", "chunk 0"), ("random", "not a speechcodec stream"),
    ("future", "newer"), ("empty", "empty"),
])
def test_bad_streams(stream, env, kind, match):
    out = stream.with_name("out.wav")
    assert_one_line_error(run_cli("decode", _bad_stream(stream, kind), out, env=env), out, match)
    if kind != "empty":
        assert run_cli("info", _bad_stream(stream, kind), env=env).returncode == 1


def test_a_wav_cut_short_is_coded_with_a_one_line_warning(tmp_path, env):
    """libsndfile quietly reads what is there; opus-tools and sox warn, and so do we."""
    whole = tmp_path / "whole.wav"
    sf.write(whole, synth_speech(13.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44 + 960])  # its header still promises 13 s
    for args, shown, stdin in (([cut], str(cut), None), (["-"], "stdin", cut.read_bytes())):
        out = tmp_path / "cut.spcd"
        result = subprocess.run([*cli_command(), "encode", *map(str, args), str(out), "--model", "tiny-test"],
                                env={**os.environ, **env}, input=stdin, capture_output=True)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 0 and out.exists(), result.stderr
        assert lines[0] == (f"speechcodec: warning: input file {shown} was cut short: its header promises "
                            "13.00 s, the file holds 0.03 s; coding what is there"), lines
        out.unlink()
    result = run_cli("encode", whole, tmp_path / "whole.spcd", "--model", "tiny-test", env=env)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


def test_threads_is_checked_and_taken(tmp_path, wav, env):
    out = tmp_path / "x.spcd"
    assert_one_line_error(run_cli("encode", wav, out, "--model", "tiny-test", "--threads", "-1", env=env), out,
                          "--threads must be 0 (torch's default) or more, got -1")
    for threads in ("0", "2"):
        result = run_cli("encode", wav, out, "--model", "tiny-test", "--threads", threads, env=env)
        assert result.returncode == 0, result.stderr
        assert run_cli("decode", out, tmp_path / "x.wav", "--threads", threads, env=env).returncode == 0


def test_a_directory_is_no_stream(tmp_path, env):
    folder, out = tmp_path / "streams", tmp_path / "out.wav"
    folder.mkdir()
    result = run_cli("decode", folder, out, env=env)
    assert_one_line_error(result, out, "is a directory, not a speechcodec stream")


def test_a_write_error_names_the_output_not_its_hidden_part_file(tmp_path, wav, env):
    out = tmp_path / ("x" * 245 + ".spcd")  # a legal name, whose hidden part file's name is too long
    assert_one_line_error(run_cli("encode", wav, out, "--model", "tiny-test", env=env), out,
                          f"cannot access {out}: File name too long")


def test_stream_for_a_model_we_do_not_have(stream, tmp_path, env):
    out = tmp_path / "out.wav"
    result = run_cli("decode", stream, out, env={"SPEECHCODEC_MODEL_PATH": str(tmp_path)})
    assert_one_line_error(result, out, "no installed model is named 'tiny-test'")


def test_unwritable_output_leaves_nothing(wav, env, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.spcd"
    result = run_cli("encode", wav, out, "--model", "tiny-test", env=env)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_leaves_no_output(tmp_path, env, small_disk):
    src = tmp_path / "long.wav"
    sf.write(src, np.tile(synth_speech(10.0), 6), 16000)  # one minute
    out = small_disk / "long.spcd"
    result = run_cli("encode", src, out, "--model", "tiny-test", env=env)
    assert result.returncode == 0, result.stderr  # a minute of codes fits in 300 kB
    back = small_disk / "long.wav"  # 1.9 MB of PCM does not
    assert_one_line_error(run_cli("decode", out, back, env=env), back, "disk")
    try:  # fill the disk, then encoding must fail cleanly too
        with open(small_disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    out2 = small_disk / "again.spcd"
    assert_one_line_error(run_cli("encode", src, out2, "--model", "tiny-test", env=env), out2, "space")


def test_a_pipe_or_device_output_is_written_into_not_replaced(tmp_path, env, stream):
    """`decode x.spcd /dev/stdout | aplay`: the node must stay, the bytes must arrive."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli("decode", stream, fifo, env=env)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert fifo.is_fifo()  # a rename would have put a regular file in its place
    run_cli("decode", stream, tmp_path / "file.wav", env=env)
    assert got["data"] == (tmp_path / "file.wav").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dash_pipes_in_and_out_as_opus_tools_do(tmp_path, wav, env, stream):
    coded = run_cli("encode", "-", "-", "--model", "tiny-test", env=env, stdin=wav.read_bytes())
    assert coded.returncode == 0, coded.stderr
    assert coded.stdout == stream.read_bytes()  # the same bytes as from the file
    assert coded.stderr.startswith("stdout: 3.00 s")
    decoded = run_cli("decode", "-", "-", env=env, stdin=coded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    run_cli("decode", stream, tmp_path / "file.wav", env=env)
    assert decoded.stdout == (tmp_path / "file.wav").read_bytes()
    facts = json.loads(run_cli("info", "-", "--json", env=env, stdin=coded.stdout).stdout)
    assert facts["file"] == "stdin" and facts["num_bytes"] == len(coded.stdout)
    empty = run_cli("encode", "-", tmp_path / "x.spcd", env=env, stdin=b"")
    assert_one_line_error(empty, tmp_path / "x.spcd", "input stdin is empty")
    foreign = run_cli("encode", "-", tmp_path / "x.spcd", env=env, stdin=b"not audio at all")
    assert_one_line_error(foreign, tmp_path / "x.spcd", "cannot read stdin as audio")
    assert "speechcodec-" not in foreign.stderr  # not the name of the file it was spooled to


def _interrupt(args: list, env: dict, ready, timeout_s: float = 120, signum: int = signal.SIGINT,
               sigint_ignored: bool = False) -> subprocess.CompletedProcess:
    """Run ``speechcodec ARGS``, wait until ``ready()`` holds, then press Ctrl-C (or send ``signum``).

    ``sigint_ignored``: start it as a shell without job control starts `cmd &`, SIGINT ignored."""
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([*cli_command(), *map(str, args)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore_sigint if sigint_ignored else None)
    deadline = time.time() + timeout_s
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the command never got there"
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, "", stderr)


@pytest.mark.parametrize("sigint_ignored", [False, True])
@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_while_encoding_leaves_nothing_and_no_traceback(tmp_path, env, sigint_ignored, attempt):
    """Interrupted while it reads its input (a FIFO kept open), encode leaves no output, no part
    file and no spool folder, and says so on one line: every time (the signal can land between two
    reads), and also when started with SIGINT ignored."""
    fifo, out, spool = tmp_path / "in.wav", tmp_path / "out.spcd", tmp_path / "tmp"
    os.mkfifo(fifo)
    spool.mkdir()
    writer: list[int] = []

    def reading() -> bool:  # the encoder has opened the FIFO: it is spooling it
        if not writer:
            try:
                writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                os.write(writer[0], b"RIFF")
            except OSError:  # no reader yet
                return False
        return True

    try:
        result = _interrupt(["encode", fifo, out, "--model", "tiny-test"], {**env, "TMPDIR": str(spool)},
                            reading, sigint_ignored=sigint_ignored)
    finally:
        for fd in writer:
            os.close(fd)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "speechcodec: interrupted; nothing was written", result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "tmp"] and not list(spool.iterdir())


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_ctrl_c_or_kill_mid_encode_removes_its_part_file(tmp_path, env, signum, said):
    long_wav, out = tmp_path / "long.wav", tmp_path / "out.spcd"
    sf.write(long_wav, np.tile(synth_speech(10.0, seed=3), 120), 16000, subtype="PCM_16")  # 20 min

    def writing() -> bool:
        return any(p.name.startswith(".out.spcd") for p in tmp_path.iterdir())

    result = _interrupt(["encode", long_wav, out, "--model", "tiny-test"], env, writing, signum=signum)
    assert result.returncode == 128 + signum, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"speechcodec: {said}; nothing was written"
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_a_full_disk_while_training_says_what_a_rerun_does(tmp_path, synth_corpus, small_disks):
    """The first disk holds no checkpoint, the second one (torch's writer crashed on both with a
    RuntimeError traceback)."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL_CONFIG, "train": {
        "steps": 60, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 5}}))
    one_checkpoint_kb = 900  # a tiny model's checkpoint with its optimiser state is about 600 kB
    for size_kb, note in ((300, "no checkpoint was written yet in {work}: a rerun starts afresh"),
                          (one_checkpoint_kb, "rerun the same command to resume from the last "
                                              "checkpoint in {work}")):
        out = small_disks(size_kb) / "m.safetensors"
        work = out.with_suffix(".work")
        result = run_cli("train", "--config", config, "--bitrate", 4000, "--data", *synth_corpus, "--out", out,
                         "--threads", 1, "-q")
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == "speechcodec: error: no space left on device; " + note.format(work=work)
        assert not out.exists() and not [p for p in work.iterdir() if p.name.startswith(".")]
    assert torch.load(work / "checkpoint.pt", weights_only=True)["step"] == 5  # whole


def test_ctrl_c_while_training_says_how_to_resume(tmp_path, synth_corpus):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL_CONFIG, "train": {
        "steps": 100000, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 5}}))
    out, work = tmp_path / "m.safetensors", tmp_path / "m.work"
    result = _interrupt(["train", "--config", config, "--bitrate", 4000, "--data", *synth_corpus, "--out", out,
                         "--threads", 1, "-q"], {}, lambda: (work / "checkpoint.pt").exists())
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"speechcodec: interrupted; rerun the same command to resume from the last checkpoint in {work}"
    assert "Traceback" not in result.stderr
    assert (work / "checkpoint.pt").exists() and not out.exists()


def _read_terminal(fd: int, on_wait=lambda text: None, timeout_s: float = 120) -> bytes:
    """What a child writes to its terminal (the master side ``fd``) until it is gone; ``on_wait``
    sees the text so far every 0.1 s."""
    import select

    text, deadline = b"", time.time() + timeout_s
    while time.time() < deadline:
        on_wait(text)
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child is gone
                break
            if not chunk:
                break
            text += chunk
    return text


def test_ctrl_c_at_a_terminal_ends_the_progress_bar_line_first(tmp_path, synth_corpus):
    """At a terminal training draws a progress bar; the stop message goes on a line of its own."""
    import fcntl
    import pty
    import struct
    import termios

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL_CONFIG, "train": {
        "steps": 100000, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 5}}))
    out, work = tmp_path / "m.safetensors", tmp_path / "m.work"
    script = Path(sys.executable).parent / "speechcodec"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(script, [str(script), "train", "--config", str(config), "--bitrate", "4000", "--data",
                          *map(str, synth_corpus), "--out", str(out), "--threads", "1"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    sent: list[bool] = []

    def press_ctrl_c(text: bytes) -> None:  # once a checkpoint is saved and the bar drawn
        if not sent and (work / "checkpoint.pt").exists() and b"%|" in text:
            os.kill(pid, signal.SIGINT)
            sent.append(True)

    text = _read_terminal(fd, press_ctrl_c)
    if not sent:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert sent and os.waitstatus_to_exitcode(status) == 130, text
    said = [line for line in text.decode().split("\n") if "speechcodec: interrupted" in line]
    assert len(said) == 1 and said[0].rstrip("\r").split("\r")[-1].startswith("speechcodec: interrupted"), text
    assert "%|" in text.decode()  # there was a bar to end


def test_dash_refuses_a_terminal(stream, env, tmp_path):
    """`decode x.spcd -` typed at a terminal must not spray binary; `encode - out` must not wait."""
    import pty

    script = Path(sys.executable).parent / "speechcodec"
    for args in (["decode", str(stream), "-"], ["encode", "-", str(tmp_path / "x.spcd")]):
        pid, fd = pty.fork()  # the child's stdin, stdout and stderr are a terminal
        if pid == 0:
            os.environ.update(env)
            os.execv(script, [str(script), *args])
        text = _read_terminal(fd)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1, text
        assert b"is the terminal" in text and b"Traceback" not in text, text
    assert not (tmp_path / "x.spcd").exists()


def test_decode_writes_the_format_its_extension_names(stream, env, tmp_path):
    for ext, fmt in (("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")):
        out = tmp_path / f"back.{ext}"
        result = run_cli("decode", stream, out, env=env)
        assert result.returncode == 0, result.stderr
        info = sf.info(str(out))
        assert info.format == fmt and abs(info.duration - 3.0) < 0.1, info
    bad = tmp_path / "odd.mp3"  # MPEG has no 7999 Hz: libsndfile's reason, on one line
    assert_one_line_error(run_cli("decode", stream, bad, "--sample-rate", "7999", env=env), bad, "7999 Hz")


def test_a_symlinked_output_is_written_through(tmp_path, wav, env):
    target = tmp_path / "real.spcd"
    target.write_bytes(b"old")
    link = tmp_path / "link.spcd"
    link.symlink_to(target.name)
    result = run_cli("encode", wav, link, "--model", "tiny-test", env=env)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and target.read_bytes()[:4] != b"old"
    assert run_cli("decode", link, tmp_path / "back.wav", env=env).returncode == 0


def test_the_input_is_never_written_over(tmp_path, wav, env, stream):
    """`encode x.wav x.wav` replaced the recording with a stream; an output that is the input (by
    name, symlink or hard link) or a stream named as audio is refused, and the input is kept."""
    audio, coded = wav.read_bytes(), stream.read_bytes()
    as_audio = run_cli("encode", wav, wav, "--model", "tiny-test", env=env)
    assert as_audio.returncode == 1 and "would hold a speechcodec stream, not .wav audio" in as_audio.stderr
    assert "name it .spcd" in as_audio.stderr and len(as_audio.stderr.strip().splitlines()) == 1
    hard = tmp_path / "hard.spcd"
    os.link(wav, hard)
    (tmp_path / "soft.wav").symlink_to(stream.name)
    for verb, src, dst in (("encode", wav, hard), ("decode", stream, tmp_path / "soft.wav"),
                           ("decode", stream, stream)):
        model = ["--model", "tiny-test"] if verb == "encode" else []
        result = run_cli(verb, src, dst, *model, env=env)
        assert result.returncode == 1, (verb, dst, result.stderr)
        assert result.stderr.strip() == f"speechcodec: error: output {dst} is the input file: writing it " \
                                        "would destroy the input; name another output"
    assert wav.read_bytes() == audio and stream.read_bytes() == coded
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


MEMORY_SCRIPT = """
import resource, sys
from speechcodec.cli import main
code = main(["encode", sys.argv[1], sys.argv[2], "--model", sys.argv[3], "-q"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def test_ten_minute_input_encodes_in_bounded_memory(tmp_path, tiny_model):
    """Peak memory for 10 minutes of audio stays within a few MB of that for 1 minute."""
    peaks = {}
    for minutes in (1, 10):
        src = tmp_path / f"{minutes}min.wav"
        with sf.SoundFile(src, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
            for i in range(minutes * 6):
                f.write(synth_speech(10.0, seed=i))
        result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(src),
                                 str(tmp_path / f"{minutes}.spcd"), str(tiny_model)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        peaks[minutes] = int(result.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux
    # 10 minutes of float32 audio alone would add 35 MiB; streaming must add far less.
    assert peaks[10] - peaks[1] < 12, peaks


def test_help_and_the_package_start_without_torch():
    """`speechcodec --help`, `info` and `import speechcodec` must not wait seconds for torch; the
    codec's names still load on first use."""
    code = ("import sys, speechcodec\n"
            "from speechcodec.cli import build_parser\n"
            "build_parser().format_help()\n"
            "from speechcodec.bitstream.container import read_stream\n"
            "assert 'torch' not in sys.modules, 'torch imported at start'\n"
            "from speechcodec import Codec, load\n"
            "assert 'torch' in sys.modules and callable(load) and Codec.__name__ == 'Codec'\n"
            "assert set(speechcodec.__all__) <= set(dir(speechcodec))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import speechcodec
        speechcodec.nope  # noqa: B018


def run_without_extras(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The CLI as installed by a plain `pip install speechcodec`: every package of the eval and
    pipeline extras absent (imports of them fail as for a package never installed)."""
    from speechcodec.errors import OPTIONAL_PACKAGES

    code = ("import sys, importlib.abc\n"
            f"ABSENT = {sorted(OPTIONAL_PACKAGES)!r}\n"
            "class Absent(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ABSENT:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Absent())\n"
            "for name in list(sys.modules):\n"
            "    assert name.split('.')[0] not in ABSENT, name\n"
            "from speechcodec.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_the_codec_needs_no_optional_package(tmp_path, wav, env):
    """encode/decode/info with the eval and pipeline extras absent; what needs them names the extra."""
    out, back = tmp_path / "speech.spcd", tmp_path / "back.wav"
    for args in (["encode", wav, out, "--model", "tiny-test"], ["info", out], ["decode", out, back]):
        result = run_without_extras(*args, env=env)
        assert result.returncode == 0, result.stderr
    assert sf.info(str(back)).frames == 48000
    manifest = tmp_path / "test.csv"
    manifest.write_text(f"speaker,utterance,path\np1,u1,{wav}\n")
    result = run_without_extras("eval", "--opus", "8k", "--test-manifest", manifest, "--out", tmp_path / "e",
                                env=env)
    assert_one_line_error(result, tmp_path / "e", "pip install 'speechcodec[eval]'")
