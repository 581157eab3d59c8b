"""The outputs progress line (agents.upload_progress) counts the chunks ``put_blob`` reports,
so it moves within a large file and says when the scheduler is verifying it."""

from __future__ import annotations

import asyncio

from sortie.agents.upload_progress import UploadProgress

MB = 1_000_000


async def test_the_line_counts_chunks_within_a_file_then_says_verifying() -> None:
    said: list[str] = []
    progress = UploadProgress(3 * MB, said.append, every_s=3600)
    async with progress.file("outputs/a.bin", 1 * MB) as sent:
        assert said == ["uploading outputs: 3 MB"]
        assert progress.line() == "uploading outputs: 0 B of 3 MB; now outputs/a.bin, 1 MB"
        sent(400_000)
        assert progress.line() == "uploading outputs: 400 kB of 3 MB; now outputs/a.bin, 1 MB"
        sent(1 * MB)  # the last chunk is in: the scheduler checks the hash now
        assert progress.line() == ("uploading outputs: 1 MB of 3 MB; verifying outputs/a.bin, 1 MB")
    async with progress.file("outputs/model.bin", 2 * MB) as sent:
        sent(500_000)
        assert progress.line() == ("uploading outputs: 2 MB of 3 MB; now outputs/model.bin, 2 MB")
        sent(0)  # a retried upload (the store was full) starts the file again
        assert progress.line() == "uploading outputs: 1 MB of 3 MB; now outputs/model.bin, 2 MB"
        sent(2 * MB + 5)  # a file that grew is refused by put_blob; never past its size
        assert progress.line().startswith("uploading outputs: 3 MB of 3 MB; verifying")
    assert said == ["uploading outputs: 3 MB"]  # the start line once, no tick in an hour


async def test_the_periodic_line_shows_the_bytes_sent_so_far() -> None:
    said: list[str] = []
    progress = UploadProgress(2 * MB, said.append, every_s=0)
    async with progress.file("outputs/model.bin", 2 * MB) as sent:
        sent(750_000)
        for _ in range(100):  # the ticker runs when this task yields
            if len(said) > 1:
                break
            await asyncio.sleep(0)
    assert said[:2] == [
        "uploading outputs: 2 MB",
        "uploading outputs: 750 kB of 2 MB; now outputs/model.bin, 2 MB",
    ]
