"""The store on S3: moto's S3 server in its own process on loopback, reached the way an operator reaches any
S3-compatible endpoint (AWS_ENDPOINT_URL and credentials in the environment)."""
import subprocess
import sys

import pytest
import s3fs

from tasks.store.storage import exists, filesystem, join, read_bytes, write_bytes

BUCKET = "clip-icm"
# moto's threaded server on a port the system picks (no race for a free one); it prints the port once serving
SERVE = """
import threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """The URL of an S3-compatible server on loopback, for this module's tests."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as requests_log:  # a file, not a pipe: it logs every request, and a full pipe would block it
        server = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, stderr=requests_log, text=True)
    port = server.stdout.readline().strip()  # blocks until it serves, or is empty if it died
    if not port:
        server.kill()
        pytest.fail(f"moto's S3 server did not start: {log.read_text()}")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=60)


@pytest.fixture(scope="module")
def s3(s3_endpoint, tmp_path_factory):
    """An S3 client of the server holding an empty bucket; the environment points every S3 client (the project's
    s3fs, pandas' pyarrow, a fresh process) at the server for this module only."""
    nowhere = tmp_path_factory.mktemp("no-aws-files")
    with pytest.MonkeyPatch.context() as env:
        # no real account, profile, config file or instance-metadata lookup (and no S3-only endpoint, which would
        # win over AWS_ENDPOINT_URL): nothing but the server is asked
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep its own endpoint
        client = s3fs.S3FileSystem(use_listings_cache=False)  # sees the bucket as it is, whoever wrote last
        client.mkdir(BUCKET)
        yield client
        s3fs.S3FileSystem.clear_instance_cache()  # their sessions would point at the stopped server


def test_a_file_another_writer_adds_to_a_listed_folder_is_seen_at_once(s3):
    # another worker sharing the store: its own client, so nothing it writes reaches this process's caches
    another_writer = s3fs.S3FileSystem(skip_instance_cache=True)
    folder = f"s3://{BUCKET}/shared/photo"
    write_bytes(join(folder, "original.parquet"), b"ours")
    fs, path = filesystem(folder)
    assert fs.ls(path, detail=False) == [f"{path}/original.parquet"]  # as the merge's clean-up lists a folder
    another_writer.pipe(f"{path}/intervened.parquet", b"theirs")
    assert exists(join(folder, "intervened.parquet"))
    assert read_bytes(join(folder, "intervened.parquet")) == b"theirs"
    another_writer.rm(f"{path}/original.parquet")
    assert not exists(join(folder, "original.parquet"))
