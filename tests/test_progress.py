"""Progress: plain lines at a fixed interval when the stream is not a terminal, a tqdm bar when
it is; one-file downloads report bytes. The clock is injected: nothing sleeps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sparsegen import progress
from sparsegen.download import download
from sparsegen.progress import Progress, format_duration, format_size


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal, and counts flushes."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.flushes = 0

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(progress.ENV_MODE, raising=False)
    monkeypatch.delenv(progress.ENV_INTERVAL, raising=False)


def test_lines_only_at_the_interval_and_at_close():
    out, clock = Stream(tty=False), Clock()
    with Progress(100, "train stya2k/full", interval_s=30, stream=out, clock=clock) as p:
        assert p.mode == "lines"
        for _ in range(29):
            clock.t += 1
            p.update()
        assert out.getvalue() == ""  # 29 s: nothing yet
        clock.t += 1
        p.update()
        assert out.lines() == ["train stya2k/full: 30/100 it (30.0%) · 1.00 it/s · "
                               "elapsed 0:00:30 · ETA 0:01:10"]
        p.set_postfix({"loss": 0.512345, "a2k": 0.12, "lr": "2e-4"})
        clock.t += 10
        p.update(20)  # 10 s after the last line: none
        assert len(out.lines()) == 1
        clock.t += 20
        p.update(5)  # 25 units in the 30 s since the last line
        assert out.lines()[1] == ("train stya2k/full: 55/100 it (55.0%) · 1.20 s/it · "
                                  "elapsed 0:01:00 · ETA 0:00:54 · loss=0.5123 a2k=0.12 lr=2e-4")
        clock.t += 5
        p.update(45)
    assert out.lines()[2] == ("train stya2k/full: 100/100 it (100.0%) · 1.54 it/s · "
                              "elapsed 0:01:05 · done · loss=0.5123 a2k=0.12 lr=2e-4")
    assert len(out.lines()) == 3 and out.flushes >= 3
    p.close()  # closing twice writes nothing more
    assert len(out.lines()) == 3


def test_slow_steps_resume_and_stop_short():
    out, clock = Stream(tty=False), Clock()
    p = Progress(400_000, "train", unit="step", initial=1000, interval_s=60, stream=out,
                 clock=clock)
    clock.t += 90
    p.update(20)
    assert out.lines() == ["train: 1020/400000 step (0.3%) · 4.50 s/step · elapsed 0:01:30 · "
                           "ETA 20d 18:43:30"]
    p.close()
    assert out.lines()[-1].endswith("elapsed 0:01:30 · stopped")


def test_bytes_unknown_total_and_no_description():
    out, clock = Stream(tty=False), Clock()
    with Progress(2_000_000_000, "download x.zip", unit="B", unit_scale=True, interval_s=30,
                  stream=out, clock=clock) as p:
        clock.t += 60
        p.update(1_200_000_000)
        assert out.lines()[-1] == ("download x.zip: 1.20 GB/2.00 GB (60.0%) · 20.0 MB/s · "
                                   "elapsed 0:01:00 · ETA 0:00:40")
    with Progress(None, unit="img", interval_s=0, stream=out, clock=clock) as p:
        clock.t += 2
        p.update(7)
        assert out.lines()[-1] == "7 img · 3.50 img/s · elapsed 0:00:02"
    assert out.lines()[-1] == "7 img · 3.50 img/s · elapsed 0:00:02 · done"


def test_a_terminal_gets_a_bar_and_no_lines():
    out, clock = Stream(tty=True), Clock()
    with Progress(100, "prepare x", unit="img", interval_s=1, stream=out, clock=clock) as p:
        assert p.mode == "bar"
        for _ in range(100):
            clock.t += 10
            p.update()
        p.write("a message")
    text = out.getvalue()
    assert "\r" in text and "100/100" in text and "a message\n" in text
    assert " · " not in text and "elapsed" not in text


@pytest.mark.parametrize(("env", "tty", "mode"), [
    ("lines", True, "lines"), ("bar", False, "bar"), ("off", True, "off"),
    ("off", False, "off"), ("auto", True, "bar"), ("", False, "lines")])
def test_environment_chooses_the_mode(monkeypatch, env, tty, mode):
    monkeypatch.setenv(progress.ENV_MODE, env)
    out, clock = Stream(tty=tty), Clock()
    with Progress(3, "x", interval_s=0, stream=out, clock=clock) as p:
        assert p.mode == mode
        clock.t += 1
        p.update()
    assert (out.getvalue() == "") == (mode == "off")
    assert (" · " in out.getvalue()) == (mode == "lines")


def test_disable_and_bad_environment(monkeypatch):
    out = Stream(tty=False)
    with Progress(3, "x", interval_s=0, stream=out, disable=True) as p:
        p.update(3)
        p.write("still shown")
    assert out.getvalue() == "still shown\n"
    monkeypatch.setenv(progress.ENV_MODE, "verbose")
    with pytest.raises(ValueError, match="SPARSEGEN_PROGRESS='verbose'"):
        Progress(3, stream=out)
    monkeypatch.setenv(progress.ENV_MODE, "lines")
    monkeypatch.setenv(progress.ENV_INTERVAL, "5")
    assert Progress(3, stream=out).interval_s == 5.0
    assert Progress(3, stream=out, interval_s=1).interval_s == 1.0
    monkeypatch.setenv(progress.ENV_INTERVAL, "soon")
    with pytest.raises(ValueError, match="SPARSEGEN_PROGRESS_INTERVAL='soon'"):
        Progress(3, stream=out)


def test_default_stream_is_stderr(capsys):
    with Progress(1, "x", interval_s=0) as p:
        p.update()
        p.write("note")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0].startswith("x: 1/1 it (100.0%)")
    assert "note" in captured.err


def test_formats():
    assert format_size(512) == "512 B"
    assert format_size(1_234) == "1.23 kB"
    assert format_size(89_100_000_000) == "89.1 GB"
    assert format_size(999_000_000) == "999 MB"
    assert format_duration(0) == "0:00:00"
    assert format_duration(374.4) == "0:06:14"
    assert format_duration(86_400 + 10 * 3600 + 31 * 60 + 5) == "1d 10:31:05"


def test_download_reports_bytes_or_nothing(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV_INTERVAL, "0")
    src = tmp_path / "weights.bin"
    src.write_bytes(b"x" * 3_000_000)  # read in 1 MiB chunks: three updates
    capsys.readouterr()
    download(src.as_uri(), tmp_path / "a" / "out.bin")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(x.startswith("download weights.bin: ") for x in lines)
    assert lines[-1].startswith("download weights.bin: 3.00 MB/3.00 MB (100.0%)")
    assert lines[-1].endswith("done")
    download(src.as_uri(), tmp_path / "b" / "out.bin", progress=False)
    download(src.as_uri(), tmp_path / "c" / "out.bin", desc="vgg")
    err = capsys.readouterr().err
    assert "weights.bin" not in err and err.count("vgg: ") == 4
