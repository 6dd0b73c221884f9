"""The batched log handler: one write per event-loop iteration, the lines in the order logged,
nothing kept past the iteration, a flush, or the process's end."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import textwrap

import pytest

from socks5d.server.logwriter import MAX_BATCH, BatchedHandler

pytestmark = pytest.mark.timeout(30)


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def make_logger(name: str) -> tuple[logging.Logger, CountingStream, BatchedHandler]:
    stream = CountingStream()
    handler = BatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.logwriter.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream, handler


def test_the_lines_of_one_iteration_are_one_write() -> None:
    logger, stream, _ = make_logger("batch")

    async def main() -> None:
        for number in range(100):
            logger.info("session %d", number)
        assert stream.writes == 0  # kept until the iteration's callbacks are done
        await asyncio.sleep(0)  # one iteration
        await asyncio.sleep(0)
        assert stream.writes == 1
        logger.info("next")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.writes == 2

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    assert lines == [f"INFO session {n}" for n in range(100)] + ["INFO next"]


def test_a_warning_is_written_at_once_after_the_lines_kept() -> None:
    logger, stream, _ = make_logger("warning")

    async def main() -> None:
        logger.info("first")
        logger.warning("second")
        assert stream.getvalue().splitlines() == ["INFO first", "WARNING second"]
        assert stream.writes == 1

    asyncio.run(main())


def test_outside_a_loop_every_line_is_written_at_once() -> None:
    logger, stream, _ = make_logger("noloop")
    logger.info("start-up")
    assert stream.getvalue() == "INFO start-up\n"


def test_a_batch_is_bounded() -> None:
    logger, stream, _ = make_logger("bounded")

    async def main() -> None:
        for number in range(MAX_BATCH + 1):
            logger.info("line %d", number)
        assert stream.writes == 1  # the first MAX_BATCH, without waiting for the iteration
        assert len(stream.getvalue().splitlines()) == MAX_BATCH

    asyncio.run(main())


def test_flush_writes_what_is_kept() -> None:
    logger, stream, handler = make_logger("flush")

    async def main() -> None:
        logger.info("kept")
        handler.flush()
        assert stream.getvalue() == "INFO kept\n"

    asyncio.run(main())


def test_a_record_that_cannot_be_formatted_does_not_lose_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger, stream, _ = make_logger("bad")

    async def main() -> None:
        logger.info("good %d", 1)
        logger.info("bad %d", "not a number")
        logger.info("good %d", 2)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.getvalue().splitlines() == ["INFO good 1", "INFO good 2"]
    assert "not a number" in capsys.readouterr().err  # logging's own report of the bad record


def test_a_line_kept_when_the_loop_stops_is_written_at_exit(tmp_path: object) -> None:
    """The loop ends before its next iteration: logging's shutdown at exit writes the line."""
    program = textwrap.dedent(
        """
        import asyncio, logging
        from socks5d.server.accesslog import configure_logging
        configure_logging("text")
        async def main():
            logging.getLogger("socks5d.access").info("last line")
            asyncio.get_running_loop().stop()
            await asyncio.sleep(3600)
        try:
            asyncio.run(main())
        except RuntimeError:
            pass  # "Event loop stopped before Future completed."
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=20
    )
    assert "socks5d.access last line" in done.stderr, done.stderr
