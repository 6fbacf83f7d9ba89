"""A deployment run keeps its deployment's settings: a run that gives some config fields (the API's
run_deployment, `prefect deployment run --params`, the UI's form) changes those alone. Through the session's
Prefect server and a process worker started as `prefect worker start`, as on a GPU host."""
import os
import subprocess
import sys

from conftest import TINY_MODEL, make_image_folder
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.utilities.callables import parameter_schema
from prefect.workers.process import ProcessWorker

from flows.run import run
from tasks.report.run_report import read_run, run_headline
from tasks.store.history import latest_runs
from tasks.vocabulary import run_tags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL = "clip-icm-test-process"  # not prefect.yaml's pools: tests/test_flows.py registers those on the same server
WORKER_TIMEOUT_S = 900  # a worker and a flow-run process, each importing Prefect (and torch) on a loaded machine


def test_a_run_that_gives_dataset_and_store_keeps_the_deployments_other_fields(prefect_api, tmp_path):
    # prefect.yaml's gpu deployment, scaled to the tiny model on the CPU
    deployed = {"dataset": "rotated-digits", "model": TINY_MODEL, "pretrained": "none",
                "store": str(tmp_path / "deployed"), "device": "cpu", "batch_size": 8, "num_workers": 0,
                "protocol": "domain-shift", "lams": [1.0]}
    given = {"dataset": make_image_folder(str(tmp_path / "Deployed_Digits"), domains=("art", "photo"),
                                          classes=("cat", "dog"), per_class=3),
             "store": str(tmp_path / "store")}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        client.create_deployment(
            flow_id=client.create_flow_from_name(run.name), name="tiny", entrypoint="flows/run.py:run",
            work_pool_name=POOL, parameters={"config": deployed},
            parameter_openapi_schema=parameter_schema(run).model_dump_for_openapi(), enforce_parameter_schema=True,
            # what `prefect deploy` records for a checkout without a pull step: run in this folder
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": ROOT}}],
        )
    flow_run = run_deployment(f"{run.name}/tiny", parameters={"config": given}, timeout=0)

    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
                   "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once",
                             "--limit", "1"], env=environment, cwd=tmp_path, capture_output=True, text=True,
                            timeout=WORKER_TIMEOUT_S)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run.id)
    assert worker.returncode == 0 and flow_run.state.type == StateType.COMPLETED, (
        f"{flow_run.state!r}\n{worker.stdout}\n{worker.stderr}")

    (entry,) = latest_runs(given["store"])
    config = read_run(entry)[2]["config"]
    assert {field: config[field] for field in given} == given
    assert {field: config[field] for field in deployed if field not in given} == {
        field: value for field, value in deployed.items() if field not in given}
    assert not os.path.exists(deployed["store"])  # nothing of the deployment's own dataset and store was used
    # named and tagged after the config it ran with (Prefect named it from the run's fields alone)
    assert flow_run.name == f"run Deployed_Digits {TINY_MODEL}"
    assert set(run_tags(given["dataset"], TINY_MODEL, "none")) <= set(flow_run.tags)
    assert flow_run.state.message == run_headline(*read_run(entry))
