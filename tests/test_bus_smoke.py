from sortie.bus import Bus, get_blob, missing_blobs, put_blob, sha256_bytes


async def test_blobs_roundtrip(bus: Bus) -> None:
    data = b"hello sortie"
    sha = sha256_bytes(data)
    assert await missing_blobs(bus.blobs, [sha]) == {sha}
    await put_blob(bus.blobs, sha, data)
    assert await missing_blobs(bus.blobs, [sha]) == set()
    assert await get_blob(bus.blobs, sha) == data
