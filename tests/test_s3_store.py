"""Dataset and store on S3: moto's S3 server in its own process on loopback, reached the way an operator reaches
any S3-compatible endpoint (AWS_ENDPOINT_URL and credentials in the environment). The storage layer first, then
the main job, run twice."""
import subprocess
import sys

import pandas as pd
import pytest
import s3fs
from conftest import TINY_MODEL, make_image_folder

from clip_icm.cli import main
from tasks.store.history import read_record, resolve_run
from tasks.store.storage import exists, filesystem, join, read_bytes, read_json, read_parquet, write_bytes

BUCKET = "clip-icm"
DATASET, STORE = f"s3://{BUCKET}/data", f"s3://{BUCKET}/store"
RUN_NAME = "on-s3"
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


def test_a_store_in_a_bucket_that_does_not_exist_is_refused_and_not_created(s3, capsys):
    code = main(["run", "--dataset", "rotated-digits", "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", "s3://clip-icm-misspelt/store"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and error.startswith("clip-icm: ")
    assert "'clip-icm-misspelt'" in error and "--store" in error
    assert not s3.exists("clip-icm-misspelt")


@pytest.fixture(scope="module")
def s3_runs(s3, prefect_api, tmp_path_factory):
    """Two identical runs, dataset and store on the bucket, started from an empty working folder."""
    local = make_image_folder(str(tmp_path_factory.mktemp("s3-upload") / "data"))
    s3.put(f"{local}/", f"{BUCKET}/data/", recursive=True)
    workdir = tmp_path_factory.mktemp("s3-workdir")
    args = ["run", "--dataset", DATASET, "--model", TINY_MODEL, "--pretrained", "none", "--store", STORE,
            "--run-name", RUN_NAME]
    runs = []
    with pytest.MonkeyPatch.context() as env:
        env.chdir(workdir)
        for _ in range(2):
            assert main(args) == 0
            runs.append(resolve_run(join(STORE, "runs", RUN_NAME)))
    return {"runs": runs, "workdir": workdir}


def test_run_on_s3_writes_its_reports_and_embeddings_to_the_bucket(s3, s3_runs):
    first, second = s3_runs["runs"]
    assert first != second and first.startswith(f"{STORE}/runs/{RUN_NAME}/")
    written = [path.removeprefix(f"{BUCKET}/store/") for path in s3.find(f"{BUCKET}/store")]
    entry = first.removeprefix(f"{STORE}/")
    for name in ("summary.parquet", "predictions.parquet", "selection.parquet", "spectrum.parquet", "run.json",
                 "accuracy_by_target.png", "projections/domain-shift-art.npz", "projections/open-class-sketch.npz"):
        assert f"{entry}/{name}" in written, name
    assert not [path for path in written if ".tmp-" in path or ".parts" in path]  # every atomic write completed
    assert list(s3_runs["workdir"].iterdir()) == []  # nothing fell back to a local ./clip-icm-store
    record = read_record(first)  # its store paths made URLs of the store that holds it
    assert record["dataset"]["root"] == DATASET and record["dataset"]["domains"] == ["art", "photo", "sketch"]
    shards = [*record["embeddings"]["shards"].values(), record["embeddings"]["text"]]
    assert shards and all(url.startswith(f"{STORE}/") and s3.exists(url) for url in shards)


def test_pandas_reads_the_summary_from_s3_through_the_same_endpoint(s3_runs):
    run = s3_runs["runs"][0]
    # pandas goes through pyarrow's own S3 client, which reads AWS_ENDPOINT_URL too: not through the project's s3fs
    summary = pd.read_parquet(join(run, "summary.parquet"))
    pd.testing.assert_frame_equal(summary, read_parquet(join(run, "summary.parquet")).to_pandas())
    domain_shift = summary[summary["protocol"] == "domain-shift"]
    assert sorted(domain_shift["target"].unique()) == ["art", "mean", "photo", "sketch"]
    assert domain_shift["accuracy"].between(0, 1).all()


def test_report_command_prints_the_latest_run_from_s3(s3_runs):
    # a fresh process: only the environment tells it where S3 is
    printed = subprocess.run([sys.executable, "-m", "clip_icm", "report", join(STORE, "runs", RUN_NAME)],
                             capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr
    assert f"dataset `{DATASET}`" in printed.stdout
    assert printed.stdout.rstrip().endswith(f"Reports: `{s3_runs['runs'][1]}`")


def test_second_identical_run_on_s3_embeds_nothing_and_reports_the_same(s3_runs):
    first, second = s3_runs["runs"]
    assert read_json(join(first, "run.json"))["embeddings"]["embedded_this_run"] > 0
    assert read_json(join(second, "run.json"))["embeddings"]["embedded_this_run"] == 0
    for name in ("summary.parquet", "predictions.parquet"):
        pd.testing.assert_frame_equal(read_parquet(join(first, name)).to_pandas(),
                                      read_parquet(join(second, name)).to_pandas())
