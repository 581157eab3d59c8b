import aiodocker

from tests.containers.conftest import Engine


async def test_the_engine_runs_a_local_image(podman: Engine, busybox_image: str) -> None:
    docker = aiodocker.Docker(url=podman.docker_host)
    try:
        container = await docker.containers.run(
            {"Image": busybox_image, "Cmd": ["sh", "-c", "echo hello from busybox"]}
        )
        await container.wait()
        logs = await container.log(stdout=True, stderr=True)
        await container.delete(force=True)
        assert "".join(logs).strip() == "hello from busybox"
    finally:
        await docker.close()
